/**
 * Readiness probing: a server is ready when a real client can connect and,
 * with JetStream, when the JetStream API answers. "Server is ready" in the
 * log and an open TCP port both come earlier than that.
 */
import { connect, nkeyAuthenticator } from "@nats-io/transport-node";

/**
 * Credentials a client needs when the server config requires them: a user
 * and password, or an nkey seed (`SU…`) such as the authority's service key.
 */
export type UserPass = UserPassword | { nkeySeed: string };

/** A user and password. */
export interface UserPassword {
  user: string;
  pass: string;
}

/** What {@link probe} must see before it reports success. */
export interface ProbeOptions {
  url: string;
  auth?: UserPass | undefined;
  /** Also require `$JS.API.INFO` to answer without error. */
  jetstream: boolean;
  /** Per-attempt budget for connecting and for the API request. */
  timeoutMs?: number;
}

/**
 * One readiness attempt: connects (no reconnects), flushes, optionally asks
 * `$JS.API.INFO`, and closes. Resolves when ready, throws with the reason
 * otherwise; callers retry it with `pollUntil`.
 */
export async function probe({ url, auth, jetstream, timeoutMs = 2_000 }: ProbeOptions): Promise<void> {
  const nc = await connect({
    servers: url,
    ...(auth && "nkeySeed" in auth ? { authenticator: nkeyAuthenticator(new TextEncoder().encode(auth.nkeySeed)) } : auth),
    timeout: timeoutMs,
    reconnect: false,
    name: "agentbus-readiness-probe",
  });
  try {
    await nc.flush();
    if (jetstream) {
      const reply = await nc.request("$JS.API.INFO", undefined, { timeout: timeoutMs });
      const info = reply.json<{ error?: { description?: string } }>();
      if (info.error) throw new Error(`JetStream not ready: ${info.error.description ?? JSON.stringify(info.error)}`);
    }
  } finally {
    await nc.close();
  }
}
