/**
 * Reading nats-server's HTTP monitoring endpoints (`/varz`, `/jsz`,
 * `/gatewayz`, ...). They report cluster state (meta leader, gateway links)
 * without credentials, which clients of an auth-enabled account cannot see.
 */

/**
 * GETs `path` from a monitoring base URL (e.g. `http://127.0.0.1:8222`) and
 * returns the parsed JSON. Throws on HTTP errors or after `timeoutMs`.
 */
export async function monitorJson<T = Record<string, unknown>>(
  monitorUrl: string,
  path: string,
  timeoutMs = 2_000,
): Promise<T> {
  const res = await fetch(new URL(path, monitorUrl), { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`GET ${path} on ${monitorUrl}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}
