import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { dataOf, textOf, type Task, type TaskArtifactUpdateEvent, type TaskEvent } from "../../core/index.js";
import { serveHttp } from "../../adapters/http/index.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { useHttpServers } from "../helpers/http.js";

type Route = (req: IncomingMessage, res: ServerResponse, body: string) => void | Promise<void>;

const listen = useHttpServers();

/** A real HTTP server on a loopback port (0 = any free one). */
async function httpServer(route: Route, port = 0): Promise<{ url: string; port: number }> {
  return listen((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d: string) => (body += d));
    req.on("end", () => void Promise.resolve(route(req, res, body)).catch((err: unknown) => res.destroy(err as Error)));
  }, port);
}

/** A port nothing listens on (bound, then released). */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const json = (res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}) => {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(value));
};
const reason = (t: Task) => (t.status.message ? textOf(t.status.message) : "");
const historyText = (t: Task) => t.history.map(textOf).join("\n");

describe("HTTP agent adapter", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("POSTs the input as JSON; a JSON answer becomes a data artifact, text a text artifact, in tasks and fast calls", async () => {
    const seen: { body: unknown; headers: IncomingHttpHeaders }[] = [];
    const api = await httpServer((req, res, body) => {
      seen.push({ body: JSON.parse(body), headers: req.headers });
      if (req.url === "/add") {
        const { a, b } = JSON.parse(body) as { a: number; b: number };
        return json(res, 200, { sum: a + b });
      }
      res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
      res.end(`hello ${(JSON.parse(body) as { text: string }).text}`);
    });
    await serveHttp(await open({ tenant: "http-json", insecureAllowAll: true }), {
      capability: "math.add",
      url: `${api.url}/add`,
      headers: { authorization: "Bearer secret-token" },
    });
    await serveHttp(await open({ tenant: "http-json", insecureAllowAll: true }), { capability: "greet", url: `${api.url}/greet` });
    const client = await open({ tenant: "http-json" });

    const added = await client.submit("math.add", { a: 2, b: 3 });
    const done = await added.result({ timeout: 15_000 });
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(done.artifacts).toHaveLength(1);
    expect(done.artifacts[0]!.name).toBe("response");
    expect(done.artifacts[0]!.parts).toEqual([{ data: { sum: 5 } }]);
    expect(seen[0]!.body).toEqual({ a: 2, b: 3 });
    expect(seen[0]!.headers["content-type"]).toBe("application/json");
    expect(seen[0]!.headers.authorization).toBe("Bearer secret-token");
    expect(seen[0]!.headers["x-agentbus-capability"]).toBe("math.add");
    expect(seen[0]!.headers["x-agentbus-task"]).toBe(added.id);
    expect(seen[0]!.headers["x-agentbus-caller"]).toBe(client.id);
    expect(seen[0]!.headers["idempotency-key"]).toBe(done.history[0]!.messageId);

    const greeted = await (await client.submit("greet", "Ada")).result({ timeout: 15_000 });
    expect(greeted.status.state).toBe("TASK_STATE_COMPLETED");
    expect(greeted.artifacts[0]!.parts).toEqual([{ text: "hello Ada" }]);
    expect(seen[1]!.body).toEqual({ text: "Ada" });

    await eventually(() => client.discover({ capability: "math.add", online: true }).length === 1);
    expect(dataOf(await client.call("math.add", { a: 20, b: 22 }))).toEqual({ sum: 42 });
  }, 60_000);

  it("streams an SSE answer: chunks and status updates reach the task's events while the endpoint is still sending", async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let closedEarly = false;
    const api = await httpServer(async (_req, res) => {
      res.on("close", () => (closedEarly = !res.writableFinished));
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      res.write(": a comment, ignored\n\n");
      res.write("event: status\ndata: thinking\n\n");
      res.write("data: Hello\n\n");
      res.write("event: chunk\ndata: , \n\n");
      // Only once the test has seen the first chunks on the bus does the endpoint go on.
      await released;
      res.write('event: data\ndata: {"tokens": 3}\n\n');
      res.write("data: world\n\n");
      res.write("event: done\ndata:\n\n");
      res.end();
    });
    await serveHttp(await open({ tenant: "http-sse", insecureAllowAll: true }), { capability: "stream", url: api.url, timeoutMs: 20_000 });
    const client = await open({ tenant: "http-sse" });

    const handle = await client.submit("stream", "go");
    const events: TaskEvent[] = [];
    let chunksBeforeRelease = 0;
    for await (const { event } of handle.events()) {
      events.push(event);
      if ("artifactUpdate" in event && ++chunksBeforeRelease === 2) release();
    }
    const chunks = events.flatMap((e) => ("artifactUpdate" in e ? [e.artifactUpdate] : [])) as TaskArtifactUpdateEvent[];
    expect(chunks.map((c) => c.artifact.parts[0])).toEqual([{ text: "Hello" }, { text: ", " }, { data: { tokens: 3 } }, { text: "world" }, { text: "" }]);
    expect(new Set(chunks.map((c) => c.artifact.artifactId)).size).toBe(1);
    expect(chunks.map((c) => c.append)).toEqual([false, true, true, true, true]);
    expect(chunks.map((c) => c.lastChunk)).toEqual([false, false, false, false, true]);
    const statuses = events.flatMap((e) => ("statusUpdate" in e ? [e.statusUpdate.status] : []));
    expect(statuses.map((s) => s.message && textOf(s.message)).filter(Boolean)).toContain("thinking");
    expect(statuses.at(-1)!.state).toBe("TASK_STATE_COMPLETED");
    // The status came before the first chunk, as sent.
    const statusAt = events.findIndex((e) => "statusUpdate" in e && e.statusUpdate.status.message && textOf(e.statusUpdate.status.message) === "thinking");
    expect(statusAt).toBeLessThan(events.findIndex((e) => "artifactUpdate" in e));

    const task = await handle.get();
    expect(task.artifacts).toHaveLength(1);
    expect(task.artifacts[0]!.parts.map((p) => p.text ?? "").join("")).toBe("Hello, world");
    expect(closedEarly).toBe(false);

    // A fast call gets the text chunks joined into one part.
    await eventually(() => client.discover({ capability: "stream", online: true }).length === 1);
    const reply = client.call("stream", "again", { timeout: 10_000 });
    const parts = (await reply).parts;
    expect(parts).toEqual([{ text: "Hello, " }, { data: { tokens: 3 } }, { text: "world" }]);
  }, 60_000);

  it("an SSE error event fails the task with the endpoint's reason", async () => {
    const api = await httpServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: partial\n\n");
      res.end("event: error\ndata: model overloaded\n\n");
    });
    await serveHttp(await open({ tenant: "http-sse-error", insecureAllowAll: true }), { capability: "stream", url: api.url, retries: 3 });
    const client = await open({ tenant: "http-sse-error" });
    const failed = await (await client.submit("stream", "go")).result({ timeout: 15_000 });
    expect(failed.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(failed)).toMatch(/failed: the endpoint reported an error: model overloaded$/);
    expect(failed.artifacts[0]!.parts).toEqual([{ text: "partial" }]);
  }, 30_000);

  it("retries 5xx and 429 with backoff until one succeeds; a 4xx fails at once; exhausted retries fail with the last status", async () => {
    let calls = 0;
    const api = await httpServer((req, res) => {
      if (req.url === "/bad") return json(res, 400, { error: "field x is required" });
      if (req.url === "/down?key=s3cret") return json(res, 500, { error: "database unavailable" });
      calls++;
      if (calls === 1) return json(res, 503, { error: "warming up" });
      if (calls === 2) return json(res, 429, { error: "slow down" }, { "retry-after": "0" });
      return json(res, 200, { ok: true, calls });
    });
    const client = await open({ tenant: "http-retry" });
    await serveHttp(await open({ tenant: "http-retry", insecureAllowAll: true }), { capability: "flaky", url: `${api.url}/flaky`, retries: 2, backoffMs: 50 });
    const ok = await (await client.submit("flaky", {})).result({ timeout: 15_000 });
    expect(ok.status.state).toBe("TASK_STATE_COMPLETED");
    expect(ok.artifacts[0]!.parts).toEqual([{ data: { ok: true, calls: 3 } }]);
    expect(calls).toBe(3);
    expect(historyText(ok)).toMatch(/attempt 1 failed \(HTTP 503 Service Unavailable: warming up\); retrying in 50 ms/);
    expect(historyText(ok)).toMatch(/attempt 2 failed \(HTTP 429 Too Many Requests: slow down\); retrying in 0 ms/);

    let badCalls = 0;
    const bad = await httpServer((_req, res) => {
      badCalls++;
      json(res, 400, { error: "field x is required" });
    });
    await serveHttp(await open({ tenant: "http-retry", insecureAllowAll: true }), { capability: "strict", url: bad.url, retries: 3, backoffMs: 10 });
    const refused = await (await client.submit("strict", {})).result({ timeout: 15_000 });
    expect(refused.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(refused)).toBe(`POST ${bad.url}/ failed: HTTP 400 Bad Request: field x is required`);
    expect(badCalls).toBe(1);

    await serveHttp(await open({ tenant: "http-retry", insecureAllowAll: true }), { capability: "down", url: `${api.url}/down?key=s3cret`, retries: 1, backoffMs: 10, breaker: false });
    const down = await (await client.submit("down", {})).result({ timeout: 15_000 });
    expect(down.status.state).toBe("TASK_STATE_FAILED");
    // The reason names the endpoint without its query string (tokens live there).
    expect(reason(down)).toBe(`POST ${api.url}/down failed after 2 attempts: HTTP 500 Internal Server Error: database unavailable`);
  }, 60_000);

  it("a slow endpoint times out: the task FAILS with the limit in the reason, and is not retried", async () => {
    let requests = 0;
    let closed = false;
    const api = await httpServer((_req, res) => {
      requests++;
      res.on("close", () => (closed = true)); // never answered
    });
    await serveHttp(await open({ tenant: "http-timeout", insecureAllowAll: true }), { capability: "slow", url: api.url, timeoutMs: 300, retries: 2 });
    const client = await open({ tenant: "http-timeout" });
    const started = Date.now();
    const failed = await (await client.submit("slow", "anyone?")).result({ timeout: 15_000 });
    expect(failed.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(failed)).toBe(`POST ${api.url}/ failed: timed out after 300 ms`);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(requests).toBe(1);
    await eventually(() => closed, 5000);
  }, 30_000);

  it("the breaker opens after failures against a dead port, then fails fast without a request until the reset timeout", async () => {
    const port = await deadPort();
    const bus = await open({ tenant: "http-breaker", insecureAllowAll: true });
    const adapter = await serveHttp(bus, {
      capability: "gone",
      url: `http://127.0.0.1:${port}/`,
      retries: 0,
      breaker: { volumeThreshold: 2, resetTimeoutMs: 2000 },
    });
    const client = await open({ tenant: "http-breaker" });
    for (let i = 0; i < 2; i++) {
      const failed = await (await client.submit("gone", `try ${i}`)).result({ timeout: 15_000 });
      expect(failed.status.state).toBe("TASK_STATE_FAILED");
      expect(reason(failed)).toBe(`POST http://127.0.0.1:${port}/ failed: cannot reach the endpoint: ECONNREFUSED`);
    }
    expect(adapter.breaker.opened).toBe(true);

    // The endpoint is back on that port, but the circuit is still open: no request reaches it.
    let requests = 0;
    await httpServer((_req, res) => {
      requests++;
      json(res, 200, "back");
    }, port);
    const started = Date.now();
    const fast = await (await client.submit("gone", "now?")).result({ timeout: 15_000 });
    expect(fast.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(fast)).toMatch(/failed: circuit open \(the endpoint kept failing\)/);
    expect(requests).toBe(0);
    expect(Date.now() - started).toBeLessThan(2000);

    // After the reset timeout one trial request goes through and closes the circuit.
    await new Promise((r) => setTimeout(r, 2100));
    const back = await (await client.submit("gone", "and now?")).result({ timeout: 15_000 });
    expect(back.status.state).toBe("TASK_STATE_COMPLETED");
    expect(back.artifacts[0]!.parts).toEqual([{ text: "back" }]);
    expect(requests).toBe(1);
    expect(adapter.breaker.closed).toBe(true);
  }, 60_000);

  it("cancel aborts the HTTP request: the endpoint sees the connection close and the task ends CANCELED", async () => {
    let received = false;
    let closed = false;
    const api = await httpServer((_req, res) => {
      received = true;
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: started\n\n");
      res.on("close", () => (closed = !res.writableFinished));
    });
    await serveHttp(await open({ tenant: "http-cancel", insecureAllowAll: true }), { capability: "long", url: api.url, timeoutMs: 60_000 });
    const client = await open({ tenant: "http-cancel" });
    const handle = await client.submit("long", "take your time");
    await eventually(async () => received && (await handle.get()).artifacts.length === 1);
    expect(closed).toBe(false);
    const canceled = await handle.cancel();
    expect(canceled.status.state).toBe("TASK_STATE_CANCELED");
    await eventually(() => closed, 5000);
  }, 30_000);
});
