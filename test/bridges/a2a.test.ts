import { createHash, randomBytes } from "node:crypto";
import Fastify, { type FastifyInstance } from "fastify";
import { jetstreamManager } from "@nats-io/jetstream";
import { ClientFactory } from "@a2a-js/sdk/client";
import { LegacyJsonRpcTransport, isLegacyAgentCard, parseLegacyAgentCard } from "@a2a-js/sdk/compat/v0_3/client";
import { Role, TaskState, type Message as SdkMessage, type StreamResponse, type Task as SdkTask } from "@a2a-js/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { traceIdOf, type Bus } from "../../core/index.js";
import { PushNotifications, a2aBridge } from "../../bridges/a2a/index.js";
import { quietLogger, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { artifactText, sendRequest, userMessage } from "../helpers/a2a.js";

const send = (text: string, extra: Partial<SdkMessage> = {}, returnImmediately = false) => sendRequest(text, extra, { returnImmediately });

async function rpc(url: string, body: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: "POST", body, headers: { "content-type": "application/json", "A2A-Version": "1.0", ...headers } });
  return (await res.json()) as { error?: { code: number; message: string }; result?: unknown };
}

describe("A2A bridge with the official @a2a-js/sdk client", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });
  let app: FastifyInstance;
  let baseUrl: string;
  let bridgeBus: Bus;

  beforeAll(async () => {
    const { connect, Identity } = await import("../../core/index.js");
    bridgeBus = await connect({ servers: nats.server.url, tenant: "a2a", identity: Identity.generate(), presenceMaxAgeMs: 3000, logger: quietLogger });
    app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    await app.register(a2aBridge, { bus: bridgeBus, open: true });
    baseUrl = await app.listen({ port: 0, host: "127.0.0.1" });
  });
  afterAll(async () => {
    await app?.close();
    await bridgeBus?.close();
  });

  async function agents() {
    const agentBus = await open({ tenant: "a2a", insecureAllowAll: true });
    await agentBus.agent({ name: "echo", description: "echoes", skills: [{ id: "echo", description: "echo the text" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    const waiterBus = await open({ tenant: "a2a", insecureAllowAll: true });
    await waiterBus.agent({ name: "waiter", skills: [{ id: "wait" }, { id: "ask" }] }, {
      wait: (ctx) => new Promise((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
      ask: async (ctx) => {
        if (ctx.history.length < 2) return ctx.inputRequired("name?");
        await ctx.artifact("Hello ", { artifactId: "g", lastChunk: false });
        return `${ctx.text}!`;
      },
    });
    for (let i = 0; i < 100 && bridgeBus.discover({ online: true }).length < 2; i++) await new Promise((r) => setTimeout(r, 50));
    return agentBus;
  }

  it("serves agent and gateway cards in the spec's JSON form, with ETag", async () => {
    await agents();
    const res = await fetch(`${baseUrl}/a2a/echo/.well-known/agent-card.json`, { headers: { "A2A-Version": "1.0" } });
    expect(res.status).toBe(200);
    const card = (await res.json()) as { name: string; skills: Array<{ id: string }>; supportedInterfaces: Array<{ url: string; protocolBinding: string; protocolVersion: string }>; capabilities: { streaming: boolean } };
    expect(card.name).toBe("echo");
    expect(card.skills.map((s) => s.id)).toEqual(["echo"]);
    expect(card.supportedInterfaces).toEqual([
      { url: `${baseUrl}/a2a/echo`, protocolBinding: "JSONRPC", protocolVersion: "1.0" },
      { url: `${baseUrl}/a2a/echo/rest`, protocolBinding: "HTTP+JSON", protocolVersion: "1.0" },
      { url: "nats:///a2a/echo", protocolBinding: "urn:agentbus:a2a:binding:nats", protocolVersion: "1.0" },
      { url: `${baseUrl}/a2a/echo`, protocolBinding: "JSONRPC", protocolVersion: "0.3" },
    ]);
    expect(card.capabilities.streaming).toBe(true);
    const etag = res.headers.get("etag")!;
    const v1 = { "A2A-Version": "1.0" };
    expect((await fetch(`${baseUrl}/a2a/echo/.well-known/agent-card.json`, { headers: { ...v1, "if-none-match": etag } })).status).toBe(304);
    // Last-Modified too, and the representation varies with A2A-Version.
    const modified = res.headers.get("last-modified")!;
    expect(Number.isNaN(Date.parse(modified))).toBe(false);
    expect(res.headers.get("vary")).toMatch(/A2A-Version/i);
    expect((await fetch(`${baseUrl}/a2a/echo/.well-known/agent-card.json`, { headers: { ...v1, "if-modified-since": modified } })).status).toBe(304);
    const gateway = (await (await fetch(`${baseUrl}/.well-known/agent-card.json`, { headers: v1 })).json()) as { skills: Array<{ id: string }> };
    expect(gateway.skills.map((s) => s.id)).toEqual(["ask", "echo", "wait"]);
    expect((await fetch(`${baseUrl}/a2a/nobody/.well-known/agent-card.json`)).status).toBe(404);
    // A client that predates A2A-Version (v0.3) discovers at the same well-known paths, host root and per agent, and gets a card it reads.
    for (const [path, url] of [["/.well-known/agent-card.json", `${baseUrl}/a2a`], ["/a2a/echo/.well-known/agent-card.json", `${baseUrl}/a2a/echo`]] as const) {
      const old = (await (await fetch(`${baseUrl}${path}`)).json()) as Record<string, unknown>;
      expect(old, path).toMatchObject({ protocolVersion: "0.3.0", url, preferredTransport: "JSONRPC" });
      expect(old).not.toHaveProperty("supportedInterfaces");
    }
  });

  it("SendMessage (blocking), GetTask, ListTasks", async () => {
    await agents();
    const client = await new ClientFactory().createFromUrl(`${baseUrl}/a2a/echo/.well-known/agent-card.json`, "");
    const result = (await client.sendMessage(send("hi"))) as SdkTask;
    expect(result.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(artifactText(result)).toBe("echo: hi");
    expect(result.metadata).not.toHaveProperty("submitter");

    const got = await client.getTask({ tenant: "", id: result.id, historyLength: undefined });
    expect(got.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);

    const list = await client.listTasks({ tenant: "", contextId: result.contextId, status: TaskState.TASK_STATE_UNSPECIFIED, pageSize: 10, pageToken: "", historyLength: undefined, statusTimestampAfter: undefined, includeArtifacts: undefined } as never);
    expect(list.tasks.map((t) => t.id)).toEqual([result.id]);

    // Paging: a second task in the same context, one per page.
    const second = (await client.sendMessage(send("again", { contextId: result.contextId }))) as SdkTask;
    const page = (token: string) => client.listTasks({ tenant: "", contextId: result.contextId, status: TaskState.TASK_STATE_UNSPECIFIED, pageSize: 1, pageToken: token, historyLength: undefined, statusTimestampAfter: undefined, includeArtifacts: undefined } as never);
    const p1 = await page("");
    expect(p1.tasks).toHaveLength(1);
    expect(p1.totalSize).toBe(2);
    const p2 = await page(p1.nextPageToken);
    expect(p2.nextPageToken).toBe("");
    expect(new Set([...p1.tasks, ...p2.tasks].map((t) => t.id))).toEqual(new Set([result.id, second.id]));
    const extended = await rpc(`${baseUrl}/a2a/echo`, JSON.stringify({ jsonrpc: "2.0", id: 9, method: "GetExtendedAgentCard", params: {} }));
    expect(extended.error?.code).toBeLessThan(0);

  }, 30_000);

  it("an agent that answers with a message alone: SendMessage returns that Message (its task id set), and the task stays readable", async () => {
    const agentBus = await open({ tenant: "a2a", insecureAllowAll: true });
    await agentBus.agent({ name: "talker", skills: [{ id: "talk" }] }, {
      talk: async (ctx) => {
        await ctx.message(`you said ${ctx.text}`);
      },
    });
    for (let i = 0; i < 100 && bridgeBus.discover({ name: "talker", online: true }).length < 1; i++) await new Promise((r) => setTimeout(r, 50));
    const client = await new ClientFactory().createFromUrl(`${baseUrl}/a2a/talker/.well-known/agent-card.json`, "");
    const reply = (await client.sendMessage(send("hello"))) as SdkMessage;
    expect(reply.role).toBe(Role.ROLE_AGENT);
    expect(reply.parts[0]!.content).toEqual({ $case: "text", value: "you said hello" });
    const task = await client.getTask({ tenant: "", id: reply.taskId, historyLength: undefined });
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    // An agent that produces an artifact is answered with its Task, as before.
    await agents();
    const echo = await new ClientFactory().createFromUrl(`${baseUrl}/a2a/echo/.well-known/agent-card.json`, "");
    expect(((await echo.sendMessage(send("x"))) as SdkTask).artifacts).toHaveLength(1);
  }, 30_000);

  it("returnImmediately returns the submitted task; CancelTask ends it; a finished task is not cancelable", async () => {
    await agents();
    const waiter = await new ClientFactory().createFromUrl(`${baseUrl}/a2a/waiter/.well-known/agent-card.json`, "");
    const submitted = (await waiter.sendMessage(send("x", { metadata: { skill: "wait" } }, true))) as SdkTask;
    expect([TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING]).toContain(submitted.status?.state);
    for (let i = 0; i < 100; i++) {
      const t = await waiter.getTask({ tenant: "", id: submitted.id, historyLength: undefined });
      if (t.status?.state === TaskState.TASK_STATE_WORKING) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const canceled = await waiter.cancelTask({ tenant: "", id: submitted.id, metadata: undefined } as never);
    expect(canceled.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    await expect(waiter.cancelTask({ tenant: "", id: submitted.id, metadata: undefined } as never)).rejects.toThrow();
    const raw = await rpc(`${baseUrl}/a2a/waiter`, JSON.stringify({ jsonrpc: "2.0", id: 7, method: "CancelTask", params: { id: submitted.id } }));
    expect(raw.error?.code).toBe(-32002);
    const missing = await rpc(`${baseUrl}/a2a/waiter`, JSON.stringify({ jsonrpc: "2.0", id: 8, method: "GetTask", params: { id: "no-such-task" } }));
    expect(missing.error?.code).toBe(-32001);
  }, 30_000);

  it("SendStreamingMessage streams the task and its events; multi-turn resumes; SubscribeToTask replays then follows", async () => {
    await agents();
    const client = await new ClientFactory().createFromUrl(`${baseUrl}/a2a/waiter/.well-known/agent-card.json`, "");
    const events: StreamResponse[] = [];
    for await (const e of client.sendMessageStream(send("hi", { metadata: { skill: "ask" } }))) events.push(e);
    expect(events[0]!.payload?.$case).toBe("task");
    const taskId = events[0]!.payload!.$case === "task" ? events[0]!.payload!.value.id : "";
    const last = events.at(-1)!.payload;
    expect(last?.$case === "statusUpdate" && last.value.status?.state).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);

    const resumed: StreamResponse[] = [];
    for await (const e of client.sendMessageStream(send("Ada", { taskId }))) resumed.push(e);
    const end = resumed.at(-1)!.payload;
    expect(end?.$case === "statusUpdate" && end.value.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    // The resumed task first (its earlier turn inside it), then only this turn's events.
    const head = resumed[0]!.payload;
    expect(head?.$case === "task" && head.value.status?.state).toBe(TaskState.TASK_STATE_WORKING);
    expect(head?.$case === "task" && head.value.history.length).toBe(3); // "hi", the agent's "name?", "Ada"
    const states = resumed.slice(1).map((e) => (e.payload?.$case === "statusUpdate" ? e.payload.value.status?.state : e.payload?.$case));
    expect(states).not.toContain(TaskState.TASK_STATE_INPUT_REQUIRED);
    expect(states.filter((s) => s === "artifactUpdate").length).toBeGreaterThan(0);
    const final = await client.getTask({ tenant: "", id: taskId, historyLength: undefined });
    expect(artifactText(final)).toBe("Hello Ada!");

    // A task in a terminal state: SubscribeToTask is UnsupportedOperationError (-32004), an immediate JSON-RPC error, not a stream.
    await expect((async () => {
      for await (const _ of client.resubscribeTask({ tenant: "", id: taskId })) { /* nothing */ }
    })()).rejects.toThrow();
    const ended = await rpc(`${baseUrl}/a2a/waiter`, JSON.stringify({ jsonrpc: "2.0", id: 3, method: "SubscribeToTask", params: { id: taskId } }));
    expect(ended.error?.code).toBe(-32004);
    // So is a message to it (SendMessage to a task in a terminal state).
    const late = await rpc(`${baseUrl}/a2a/waiter`, JSON.stringify({ jsonrpc: "2.0", id: 4, method: "SendMessage", params: { message: { messageId: "late", role: "ROLE_USER", taskId, parts: [{ text: "more" }] } } }));
    expect(late.error?.code).toBe(-32004);
  }, 30_000);

  it("SubscribeToTask on a task waiting for input follows it through the next turn to its end; historyLength applies to SendMessage", async () => {
    await agents();
    const client = await new ClientFactory().createFromUrl(`${baseUrl}/a2a/waiter/.well-known/agent-card.json`, "");
    const asked = (await client.sendMessage(send("hi", { metadata: { skill: "ask" } }))) as SdkTask;
    expect(asked.status?.state).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);
    const seen: StreamResponse[] = [];
    const following = (async () => {
      for await (const e of client.resubscribeTask({ tenant: "", id: asked.id })) seen.push(e);
    })();
    // The subscription is open (its first response is the task as it is) before the answer goes in.
    for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(seen[0]!.payload?.$case === "task" && seen[0]!.payload.value.status?.state).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);
    const answered = (await client.sendMessage({ ...send("Ada", { taskId: asked.id }), configuration: { acceptedOutputModes: [], taskPushNotificationConfig: undefined, historyLength: 1, returnImmediately: false } })) as SdkTask;
    expect(answered.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(answered.history).toHaveLength(1); // the last message only, as historyLength asked
    await following;
    const last = seen.at(-1)!.payload;
    expect(last?.$case === "statusUpdate" && last.value.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(seen.some((e) => e.payload?.$case === "artifactUpdate")).toBe(true);
  }, 30_000);

  it("v0.3 clients: message/send, tasks/get, tasks/cancel, message/stream on the same endpoint, and a v0.3 card", async () => {
    await agents();
    const url = `${baseUrl}/a2a/echo`;
    const v03 = async (method: string, params: unknown) => {
      const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) });
      return (await res.json()) as { result?: Record<string, unknown> & { id: string; status: { state: string }; artifacts: Array<{ parts: Array<{ kind: string; text: string }> }> }; error?: { code: number } };
    };
    const sent = await v03("message/send", { message: { kind: "message", messageId: "v03-1", role: "user", parts: [{ kind: "text", text: "old" }] } });
    expect(sent.result?.kind).toBe("task");
    expect(sent.result?.status.state).toBe("completed");
    expect(sent.result?.artifacts[0]!.parts[0]).toEqual({ kind: "text", text: "echo: old" });
    const got = await v03("tasks/get", { id: sent.result!.id });
    expect(got.result?.status.state).toBe("completed");
    expect((await v03("tasks/cancel", { id: sent.result!.id })).error?.code).toBe(-32002);
    expect((await v03("tasks/get", { id: "missing" })).error?.code).toBe(-32001);

    const stream = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "message/stream", params: { message: { kind: "message", messageId: "v03-2", role: "user", parts: [{ kind: "text", text: "sse" }] } } }) });
    expect(stream.headers.get("content-type")).toMatch(/text\/event-stream/);
    const text = await stream.text();
    expect(text).toContain('"state":"completed"');
    expect(text).toContain("echo: sse");

    const card = (await (await fetch(`${baseUrl}/a2a/echo/v0.3/.well-known/agent-card.json`)).json()) as { protocolVersion: string; url: string; preferredTransport: string };
    expect(card).toMatchObject({ protocolVersion: "0.3.0", url, preferredTransport: "JSONRPC" });
  });

  it("a v0.3 client, from discovery at the well-known path to cancel: the SDK's v0.3 card parser and transport", async () => {
    await agents();
    // Discovery as a v0.3 client does it: no A2A-Version header.
    const raw = await (await fetch(`${baseUrl}/a2a/waiter/.well-known/agent-card.json`)).json();
    expect(isLegacyAgentCard(raw)).toBe(true);
    const card = parseLegacyAgentCard(raw);
    const endpoint = card.supportedInterfaces[0]!.url;
    expect(endpoint).toBe(`${baseUrl}/a2a/waiter`);
    const transport = new LegacyJsonRpcTransport({ endpoint });
    const submitted = (await transport.sendMessage(send("x", { metadata: { skill: "wait" } }, true))) as SdkTask;
    for (let i = 0; i < 100; i++) {
      if ((await transport.getTask({ tenant: "", id: submitted.id, historyLength: undefined })).status?.state === TaskState.TASK_STATE_WORKING) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const canceled = await transport.cancelTask({ tenant: "", id: submitted.id, metadata: undefined } as never);
    expect(canceled.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
    expect((await transport.getTask({ tenant: "", id: submitted.id, historyLength: undefined })).status?.state).toBe(TaskState.TASK_STATE_CANCELED);
  });

  it("answers each protocol error with its JSON-RPC code", async () => {
    await agents();
    const url = `${baseUrl}/a2a/echo`;
    expect((await rpc(url, "{not json")).error?.code).toBe(-32700);
    expect((await rpc(url, JSON.stringify({ hello: "world" }))).error?.code).toBe(-32600);
    expect((await rpc(url, JSON.stringify({ jsonrpc: "2.0", id: 1, method: "NoSuchMethod", params: {} }))).error?.code).toBe(-32601);
    expect((await rpc(url, JSON.stringify({ jsonrpc: "2.0", id: 2, method: "GetTask", params: "nope" }))).error?.code).toBe(-32602);
    expect((await rpc(url, "{}", { "content-type": "text/plain" })).error?.code).toBe(-32005);
    // A message for the gateway must name a skill it can route by.
    const unrouted = await rpc(`${baseUrl}/a2a`, JSON.stringify({ jsonrpc: "2.0", id: 4, method: "SendMessage", params: { message: { messageId: "x", role: "ROLE_USER", parts: [{ text: "hi" }] } } }));
    expect(unrouted.error?.code).toBe(-32602);
    const routed = await rpc(`${baseUrl}/a2a`, JSON.stringify({ jsonrpc: "2.0", id: 5, method: "SendMessage", params: { message: { messageId: "y", role: "ROLE_USER", parts: [{ text: "hi" }], metadata: { skill: "echo" } } } }));
    expect(JSON.stringify(routed.result)).toContain("echo: hi");
    expect((await rpc(url, JSON.stringify({ jsonrpc: "2.0", id: 3, method: "GetTask", params: { id: "x" } }), { "A2A-Version": "9.9" })).error?.code).toBe(-32009);
  });

  it("answers what is not a task, not a page and not a request with the spec's errors, never -32603", async () => {
    await agents();
    const url = `${baseUrl}/a2a/echo`;
    const call = (method: string, params: unknown, headers: Record<string, string> = {}) => rpc(url, JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }), headers);
    // Ids no task can have: not found, whatever the operation.
    for (const id of ["a.b", "x y", "*", ">", ""]) {
      expect((await call("GetTask", { id })).error?.code, `GetTask ${id}`).toBe(-32001);
      expect((await call("CancelTask", { id })).error?.code, `CancelTask ${id}`).toBe(-32001);
      expect((await call("SubscribeToTask", { id })).error?.code, `SubscribeToTask ${id}`).toBe(-32001);
    }
    // A page token the bridge did not give, a status that is not a task state, a negative page size: invalid params.
    expect((await call("ListTasks", { pageToken: "not-a-token" })).error?.code).toBe(-32602);
    expect((await call("ListTasks", { status: "TASK_STATE_SLEEPING" })).error?.code).toBe(-32602);
    expect((await call("ListTasks", { pageSize: -1 })).error?.code).toBe(-32602);
    // The official client's list with no status (it sends UNRECOGNIZED for none) lists.
    const client = await new ClientFactory().createFromUrl(`${url}/.well-known/agent-card.json`, "");
    await client.sendMessage(send("listed"));
    const listed = await client.listTasks({ pageSize: 3 } as never);
    expect(listed.tasks.length).toBeGreaterThan(0);
    // 10 000 levels of nesting: an invalid request.
    const deep = `{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"x","metadata":${"[".repeat(10_000)}${"]".repeat(10_000)}}}`;
    expect((await rpc(url, deep)).error?.code).toBe(-32600);
    // A media type fastify has no parser for: HTTP 415 with the JSON-RPC error.
    const xml = await fetch(url, { method: "POST", body: "<x/>", headers: { "content-type": "application/xml", "A2A-Version": "1.0" } });
    expect(xml.status).toBe(415);
    expect(((await xml.json()) as { error: { code: number } }).error.code).toBe(-32005);
    // A v1.0 method without A2A-Version (so an A2A 0.3 request): the error says why.
    const unversioned = await fetch(url, { method: "POST", body: JSON.stringify({ jsonrpc: "2.0", id: 5, method: "GetTask", params: { id: "x" } }), headers: { "content-type": "application/json" } });
    const body = (await unversioned.json()) as { error: { code: number; message: string } };
    expect(body.error.code).toBe(-32601);
    expect(body.error.message).toContain("A2A-Version");
  });
});

describe("A2A bridge: large files and data through the bus's object store", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });
  const MB = 1024 * 1024;
  const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

  it("SendMessage with a 20 MB file part and 20 MB of data; the 50 MB artifact comes back, also through GetTask; past maxBodyBytes: HTTP 413", async () => {
    const { connect, Identity } = await import("../../core/index.js");
    const bridgeBus = await connect({ servers: nats.server.url, tenant: "a2abig", identity: Identity.generate(), presenceMaxAgeMs: 3000, logger: quietLogger });
    const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    try {
      await app.register(a2aBridge, { bus: bridgeBus, open: true, maxBodyBytes: 64 * MB, push: false });
      const baseUrl = await app.listen({ port: 0, host: "127.0.0.1" });
      const output = randomBytes(50 * MB);
      let got: { file: string; name: string; data: number } | undefined;
      const agentBus = await open({ tenant: "a2abig", insecureAllowAll: true });
      await agentBus.agent({ name: "files", skills: [{ id: "files" }] }, {
        files: async (ctx) => {
          const file = ctx.userMessage.parts.find((p) => p.raw !== undefined)!;
          const data = ctx.userMessage.parts.find((p) => p.data !== undefined)!.data as { rows: string[] };
          got = { file: sha(Buffer.from(file.raw!, "base64")), name: file.filename!, data: data.rows.length };
          await ctx.artifact([{ raw: output.toString("base64"), mediaType: "application/octet-stream", filename: "out.bin" }], { name: "out" });
          return "done";
        },
      });
      for (let i = 0; i < 100 && bridgeBus.discover({ online: true }).length < 1; i++) await new Promise((r) => setTimeout(r, 50));
      const input = randomBytes(20 * MB);
      const rows = Array.from({ length: 20_000 }, (_, i) => `${i}:${"r".repeat(1000)}`);
      const client = await new ClientFactory().createFromUrl(`${baseUrl}/a2a/files/.well-known/agent-card.json`, "");
      const message = userMessage("", {
        parts: [
          { content: { $case: "raw", value: input }, metadata: undefined, filename: "in.bin", mediaType: "application/octet-stream" },
          { content: { $case: "data", value: { rows } }, metadata: undefined, filename: "", mediaType: "" },
        ],
      });
      const result = (await client.sendMessage({ ...send(""), message })) as SdkTask;
      expect(result.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
      expect(got).toEqual({ file: sha(input), name: "in.bin", data: 20_000 });
      const rawOf = (t: SdkTask) => {
        const part = t.artifacts.find((a) => a.name === "out")!.parts[0]!;
        expect(part.filename).toBe("out.bin");
        return part.content?.$case === "raw" ? part.content.value : Buffer.alloc(0);
      };
      expect(sha(rawOf(result))).toBe(sha(output));
      const again = await client.getTask({ tenant: "", id: result.id, historyLength: undefined });
      expect(sha(rawOf(again))).toBe(sha(output));

      // Past the bridge's body limit: refused before it is read.
      const big = await fetch(`${baseUrl}/a2a/files`, { method: "POST", headers: { "content-type": "application/json", "A2A-Version": "1.0" }, body: "x".repeat(64 * MB + 1) });
      expect(big.status).toBe(413);
      // A JSON-RPC error, as every answer of the endpoint is.
      expect(((await big.json()) as { jsonrpc: string; error: { code: number } })).toMatchObject({ jsonrpc: "2.0", error: { code: -32600 } });
    } finally {
      await app.close();
      await bridgeBus.close();
    }
  }, 120_000);
});

describe("A2A bridge authentication and rate limits", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("API keys map to a bus identity; missing or wrong keys get 401; each key is rate-limited", async () => {
    const bridgeBus = await open({ tenant: "auth" });
    const keyBus = await open({ tenant: "auth" });
    const agentBus = await open({ tenant: "auth", insecureAllowAll: true });
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    for (let i = 0; i < 100 && bridgeBus.discover({ online: true }).length < 1; i++) await new Promise((r) => setTimeout(r, 50));
    const { hashApiKey } = await import("../../bridges/a2a/index.js");
    const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    await app.register(a2aBridge, { bus: bridgeBus, apiKeys: [{ name: "team-a", sha256: hashApiKey("s3cret"), bus: keyBus }], rateLimit: { max: 3, timeWindowMs: 60_000 } });
    const base = await app.listen({ port: 0, host: "127.0.0.1" });
    try {
      const card = (await (await fetch(`${base}/a2a/echo/.well-known/agent-card.json`, { headers: { "A2A-Version": "1.0" } })).json()) as { securitySchemes: Record<string, unknown> };
      expect(card.securitySchemes).toEqual({ apiKey: { apiKeySecurityScheme: { location: "header", name: "X-API-Key", description: "agentbus API key" } } });
      // The same scheme in v0.3 form for a client that predates A2A-Version.
      const old = (await (await fetch(`${base}/a2a/echo/.well-known/agent-card.json`)).json()) as { securitySchemes: Record<string, unknown>; security: unknown };
      expect(old).toMatchObject({ securitySchemes: { apiKey: { type: "apiKey", in: "header", name: "X-API-Key" } }, security: [{ apiKey: [] }] });

      const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "SendMessage", params: { message: { messageId: "a1", role: "ROLE_USER", parts: [{ text: "hi" }] } } });
      const post = (headers: Record<string, string>) => fetch(`${base}/a2a/echo`, { method: "POST", body, headers: { "content-type": "application/json", "A2A-Version": "1.0", ...headers } });
      const missing = await post({});
      expect(missing.status).toBe(401);
      expect(((await missing.json()) as { error: { code: number } }).error.code).toBe(-32000);
      expect((await post({ "X-API-Key": "wrong" })).status).toBe(401);

      const ok = await post({ "X-API-Key": "s3cret" });
      expect(ok.status).toBe(200);
      const task = ((await ok.json()) as { result: { task: { id: string } } }).result.task;
      expect((await keyBus.task(task.id)).metadata.submitter).toBe(keyBus.id);
      expect((await post({ authorization: "Bearer s3cret" })).status).toBe(200);
      expect((await post({ "X-API-Key": "s3cret" })).status).toBe(200);
      const limited = await post({ "X-API-Key": "s3cret" });
      expect(limited.status).toBe(429);
      expect(((await limited.json()) as { error: { code: number } }).error.code).toBe(-32000);
    } finally {
      await app.close();
    }
  });
});

describe("two A2A bridge processes behind one identity are interchangeable", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("a stream opened on one replica, dropped mid-task, is resubscribed on the other", async () => {
    const { Identity } = await import("../../core/index.js");
    const { startFixture } = await import("../helpers/process.js");
    const seed = Identity.generate().exportSeed();
    const agentBus = await open({ tenant: "replicas", insecureAllowAll: true });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await agentBus.agent({ name: "slow", skills: [{ id: "slow" }] }, {
      slow: async (ctx) => {
        await ctx.status("step 1");
        await gate;
        await ctx.artifact("done");
      },
    });
    process.env.AGENTBUS_SEED = seed;
    const [a, b] = await Promise.all([startFixture("a2a-bridge", [nats.server.url, "replicas"]), startFixture("a2a-bridge", [nats.server.url, "replicas"])]);
    delete process.env.AGENTBUS_SEED;
    try {
      const factory = new ClientFactory();
      const clientA = await factory.createFromUrl(`${a.hello.url as string}/a2a/slow/.well-known/agent-card.json`, "");
      const clientB = await factory.createFromUrl(`${b.hello.url as string}/a2a/slow/.well-known/agent-card.json`, "");
      // Stream on A until the first status update, then walk away.
      let taskId = "";
      for await (const e of clientA.sendMessageStream(send("go"))) {
        if (e.payload?.$case === "task") taskId = e.payload.value.id;
        if (e.payload?.$case === "statusUpdate") break;
      }
      expect(taskId).not.toBe("");
      // The task goes on without the client; B picks the stream up.
      const seen: string[] = [];
      const following = (async () => {
        for await (const e of clientB.resubscribeTask({ tenant: "", id: taskId })) {
          seen.push(e.payload?.$case ?? "?");
          if (seen.length === 1) release();
        }
      })();
      await following;
      expect(seen[0]).toBe("task");
      expect(seen).toContain("artifactUpdate");
      const final = await clientB.getTask({ tenant: "", id: taskId, historyLength: undefined });
      expect(final.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    } finally {
      await Promise.all([a.kill(), b.kill()]);
    }
  }, 60_000);
});

describe("A2A push notifications", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("configs are kept in KV; task updates reach the webhook with its token, with retries, across a bridge restart", async () => {
    const { createServer } = await import("node:http");
    const received: Array<{ token?: string; traceparent?: string; body: Record<string, unknown> }> = [];
    let failures = 2;
    const hook = createServer((req, res) => {
      let data = "";
      req.on("data", (c) => (data += String(c)));
      req.on("end", () => {
        if (failures-- > 0) return void res.writeHead(500).end();
        received.push({ token: req.headers["x-a2a-notification-token"] as string | undefined, traceparent: req.headers.traceparent as string | undefined, body: JSON.parse(data) as Record<string, unknown> });
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, "127.0.0.1", r));
    const hookUrl = `http://127.0.0.1:${(hook.address() as { port: number }).port}/hook`;

    const agentBus = await open({ tenant: "push", insecureAllowAll: true });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await agentBus.agent({ name: "slow", skills: [{ id: "slow" }] }, { slow: async () => (await gate, "finished") });
    const bridgeBus = await open({ tenant: "push" });
    for (let i = 0; i < 100 && bridgeBus.discover({ online: true }).length < 1; i++) await new Promise((r) => setTimeout(r, 50));
    const startBridge = async () => {
      const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
      await app.register(a2aBridge, { bus: bridgeBus, open: true, push: { backoffMs: 50, allowPrivateNetworks: true } });
      return { app, url: await app.listen({ port: 0, host: "127.0.0.1" }) };
    };
    const first = await startBridge();
    try {
      const client = await new ClientFactory().createFromUrl(`${first.url}/a2a/slow/.well-known/agent-card.json`, "");
      const pushConfig = { tenant: "", id: "", taskId: "", url: hookUrl, token: "tok-1", authentication: undefined };
      const request = send("go", {}, true);
      request.configuration.taskPushNotificationConfig = pushConfig as never;
      const task = (await client.sendMessage(request)) as SdkTask;
      const listed = await client.listTaskPushNotificationConfig({ tenant: "", taskId: task.id, pageSize: 10, pageToken: "" });
      expect(listed.configs).toHaveLength(1);
      expect(listed.configs[0]!.url).toBe(hookUrl);
      const extra = await client.createTaskPushNotificationConfig({ ...pushConfig, taskId: task.id, id: "second", url: `${hookUrl}?2` });
      expect((await client.getTaskPushNotificationConfig({ tenant: "", taskId: task.id, id: extra.id })).url).toBe(`${hookUrl}?2`);
      await client.deleteTaskPushNotificationConfig({ tenant: "", taskId: task.id, id: "second" });
      expect((await client.listTaskPushNotificationConfig({ tenant: "", taskId: task.id, pageSize: 10, pageToken: "" })).configs).toHaveLength(1);

      // The bridge goes away; the task finishes meanwhile; a new bridge delivers.
      await first.app.close();
      release();
      await (await bridgeBus.taskHandle(task.id)).result();
      const second = await startBridge();
      try {
        const done = () => received.some((r) => JSON.stringify(r.body).includes("TASK_STATE_COMPLETED")) && received.some((r) => "artifactUpdate" in r.body);
        for (let i = 0; i < 200 && !done(); i++) await new Promise((r) => setTimeout(r, 50));
        const completed = received.find((r) => JSON.stringify(r.body).includes("TASK_STATE_COMPLETED"));
        expect(completed?.token).toBe("tok-1");
        expect(completed?.body).toMatchObject({ statusUpdate: { taskId: task.id } });
        expect(received.some((r) => "artifactUpdate" in r.body)).toBe(true);
        // Each POST continues the task's trace (the bridge's SendMessage started it).
        const traceIds = new Set(received.map((r) => traceIdOf(r.traceparent)));
        expect([...traceIds]).toEqual([expect.stringMatching(/^[0-9a-f]{32}$/)]);
        // The task shows its deliveries: the two failed attempts (retried) and every event delivered.
        const reader = await new ClientFactory().createFromUrl(`${second.url}/a2a/slow/.well-known/agent-card.json`, "");
        const shown = (await reader.getTask({ tenant: "", id: task.id, historyLength: undefined })).metadata as Record<string, Record<string, { delivered: number; failedAttempts: number; dropped: number; lastError?: string }>>;
        const delivery = Object.values(shown["agentbus.push"]!)[0]!;
        expect(delivery).toMatchObject({ failedAttempts: 2, dropped: 0, lastError: "webhook answered 500" });
        expect(delivery.delivered).toBe(received.length);
      } finally {
        await second.app.close();
      }
    } finally {
      hook.close();
    }
  }, 60_000);
});

describe("A2A push notifications: what a webhook may be", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("refuses non-public addresses, URLs with credentials, and authentication that is no HTTP scheme; a stored private address is not called", async () => {
    const agentBus = await open({ tenant: "hooks", insecureAllowAll: true });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }, { id: "slow" }] }, { echo: (ctx) => `echo: ${ctx.text}`, slow: async () => (await gate, "late") });
    const bridgeBus = await open({ tenant: "hooks" });
    for (let i = 0; i < 100 && bridgeBus.discover({ online: true }).length < 1; i++) await new Promise((r) => setTimeout(r, 50));
    let called = 0;
    const { createServer } = await import("node:http");
    const hook = createServer((_req, res) => (called++, res.writeHead(200).end()));
    await new Promise<void>((r) => hook.listen(0, "127.0.0.1", r));
    const hookUrl = `http://127.0.0.1:${(hook.address() as { port: number }).port}/hook`;
    const start = async (allowPrivateNetworks: boolean) => {
      const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
      await app.register(a2aBridge, { bus: bridgeBus, open: true, push: { backoffMs: 20, allowPrivateNetworks } });
      const url = await app.listen({ port: 0, host: "127.0.0.1" });
      return { app, client: await new ClientFactory().createFromUrl(`${url}/a2a/echo/.well-known/agent-card.json`, "") };
    };
    const strict = await start(false);
    try {
      const task = (await strict.client.sendMessage(send("x", { metadata: { skill: "echo" } }))) as SdkTask;
      const config = (url: string, authentication?: { scheme: string; credentials: string }) => ({ tenant: "", id: "", taskId: task.id, url, token: "", authentication });
      for (const [url, auth] of [
        [hookUrl],
        ["http://localhost:9/hook"],
        ["http://[::1]:9/hook"],
        ["http://169.254.169.254/latest/meta-data"],
        ["http://10.1.2.3/hook"],
        ["ftp://example.com/hook"],
        ["https://user:pw@example.com/hook"],
        ["https://example.com/hook", { scheme: "Bearer token", credentials: "x" }],
        ["https://example.com/hook", { scheme: "Bearer", credentials: "a\r\nX-Injected: 1" }],
      ] as Array<[string, { scheme: string; credentials: string }?]>) {
        await expect(strict.client.createTaskPushNotificationConfig(config(url, auth)), url).rejects.toMatchObject({ name: "RequestMalformedError" });
      }
      // Public addresses with an HTTP scheme are taken.
      const ok = await strict.client.createTaskPushNotificationConfig(config("https://hooks.example.com/a2a", { scheme: "Basic", credentials: Buffer.from("u:p").toString("base64") }));
      expect(ok.authentication?.scheme).toBe("Basic");
    } finally {
      await strict.app.close();
    }
    // A config stored where private addresses are allowed is not called by a replica where they are not: dropped at once, and shown.
    const again = await start(false);
    try {
      const taskId = ((await again.client.sendMessage(send("go", { metadata: { skill: "slow" } }, true))) as SdkTask).id;
      const lax = await PushNotifications.start(bridgeBus, [], { allowPrivateNetworks: true });
      await lax.set({ id: "local", taskId, url: hookUrl });
      await lax.stop();
      release();
      await (await bridgeBus.taskHandle(taskId)).result();
      let shown: Record<string, { dropped: number; lastError?: string }> | undefined;
      for (let i = 0; i < 100 && !shown; i++) {
          shown = ((await again.client.getTask({ tenant: "", id: taskId, historyLength: undefined })).metadata as Record<string, typeof shown>)?.["agentbus.push"];
        if (!shown) await new Promise((r) => setTimeout(r, 50));
      }
      expect(shown?.local).toMatchObject({ delivered: 0, lastError: expect.stringMatching(/not public/) });
      expect(shown!.local!.dropped).toBeGreaterThan(0);
      expect(called).toBe(0);
    } finally {
      await again.app.close();
      hook.close();
    }
  }, 60_000);
});

describe("A2A bridge SSE", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("sends keep-alive comments, and a client that goes away stops the relay but not the task", async () => {
    const agentBus = await open({ tenant: "sse", insecureAllowAll: true });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await agentBus.agent({ name: "slow", skills: [{ id: "slow" }] }, { slow: async () => (await gate, "finished anyway") });
    const bridgeBus = await open({ tenant: "sse" });
    for (let i = 0; i < 100 && bridgeBus.discover({ online: true }).length < 1; i++) await new Promise((r) => setTimeout(r, 50));
    const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    await app.register(a2aBridge, { bus: bridgeBus, open: true, push: false, keepAliveMs: 100 });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    try {
      const abort = new AbortController();
      const res = await fetch(`${url}/a2a/slow`, {
        method: "POST",
        signal: abort.signal,
        headers: { "content-type": "application/json", "A2A-Version": "1.0", accept: "text/event-stream" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "SendStreamingMessage", params: { message: { messageId: "sse-1", role: "ROLE_USER", parts: [{ text: "x" }] } } }),
      });
      const reader = res.body!.getReader();
      let text = "";
      while (!text.includes(": keep-alive")) text += new TextDecoder().decode((await reader.read()).value);
      const taskId = /"id":"([0-9a-f]{48})"/.exec(text)![1]!;
      // The relay's event consumer is there while the client reads…
      const jsm = await jetstreamManager(bridgeBus.nc);
      const consumers = async () => (await jsm.streams.info("MESH_SSE_EVENTS")).state.consumer_count;
      const reading = await consumers();
      expect(reading).toBeGreaterThan(0);
      abort.abort();
      await reader.cancel().catch(() => {});
      // …and gone within a second of the client leaving, while the task still waits (no event to wake the relay).
      const left = Date.now();
      while ((await consumers()) >= reading && Date.now() - left < 1_000) await new Promise((r) => setTimeout(r, 20));
      expect(await consumers()).toBeLessThan(reading);
      release();
      const done = await (await bridgeBus.taskHandle(taskId)).result({ timeout: 10_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    } finally {
      await app.close();
    }
  });
});

describe("A2A bridge: resumable streams", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  /** The SSE events of a response as `{id, data}`, read until the stream ends or `until` says so. */
  async function sse(res: Response, until?: (events: Array<{ id?: string; data: string }>) => boolean) {
    const reader = res.body!.getReader();
    const events: Array<{ id?: string; data: string }> = [];
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += new TextDecoder().decode(value);
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const id = /^id: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (data !== undefined) events.push({ ...(id !== undefined && { id }), data });
      }
      if (until?.(events)) {
        await reader.cancel().catch(() => {});
        break;
      }
    }
    return events;
  }

  it("every streamed event carries its cursor as the SSE id and in its metadata; SubscribeToTask with Last-Event-ID resumes after it with no gap and no duplicate", async () => {
    const agentBus = await open({ tenant: "resume", insecureAllowAll: true });
    const gates = [0, 1, 2].map(() => { let open!: () => void; const p = new Promise<void>((r) => (open = r)); return { p, open }; });
    await agentBus.agent({ name: "steps", skills: [{ id: "steps" }] }, {
      steps: async (ctx) => {
        await gates[0]!.p;
        await ctx.status("step 1");
        await gates[1]!.p;
        await ctx.artifact("part", { artifactId: "a" });
        await gates[2]!.p;
        return "done";
      },
    });
    const bridgeBus = await open({ tenant: "resume" });
    for (let i = 0; i < 100 && bridgeBus.discover({ online: true }).length < 1; i++) await new Promise((r) => setTimeout(r, 50));
    const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    await app.register(a2aBridge, { bus: bridgeBus, open: true, push: false });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const post = (method: string, params: unknown, headers: Record<string, string> = {}) =>
      fetch(`${url}/a2a/steps`, { method: "POST", headers: { "content-type": "application/json", "A2A-Version": "1.0", ...headers }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) });
    try {
      const handle = await bridgeBus.submit("steps", "go");
      // Followed from before the first step until "step 1", then dropped.
      const subscribed = await post("SubscribeToTask", { id: handle.id });
      gates[0]!.open();
      const before = await sse(subscribed, (ev) => ev.some((e) => e.data.includes("statusUpdate") && e.data.includes("step 1")));
      expect(before.every((e) => e.id !== undefined && /^\d+$/.test(e.id))).toBe(true);
      // The cursor is in the event's metadata too.
      const step = before.at(-1)!;
      const stepEvent = JSON.parse(step.data) as { result: { statusUpdate: { metadata: Record<string, string> } } };
      expect(stepEvent.result.statusUpdate.metadata["agentbus.cursor"]).toBe(step.id);
      const cursor = step.id!;
      // While no one listens, the task goes on to its end.
      gates[1]!.open();
      gates[2]!.open();
      await handle.result({ timeout: 10_000 });
      // Resumed: exactly what came after the cursor, to the end.
      const after = await sse(await post("SubscribeToTask", { id: handle.id }, { "Last-Event-ID": cursor }));
      const all: number[] = [];
      for await (const { sequence } of handle.events()) all.push(sequence);
      expect(after.map((e) => Number(e.id))).toEqual(all.filter((seq) => seq > Number(cursor)));
      expect(after.some((e) => e.data.includes("artifactUpdate"))).toBe(true);
      expect(after.at(-1)!.data).toContain("TASK_STATE_COMPLETED");
      // Without a cursor, a task that has ended is not subscribed to (UnsupportedOperationError).
      expect(((await (await post("SubscribeToTask", { id: handle.id })).json()) as { error: { code: number } }).error.code).toBe(-32004);
    } finally {
      await app.close();
    }
  }, 30_000);
});

describe("A2A bridge process in front of an agent process", () => {
  const nats = useNatsServer();

  it("an SDK client reaches an agent in another process through a bridge process", async () => {
    const { startFixture } = await import("../helpers/process.js");
    const agent = await startFixture("echo-agent", [nats.server.url, "procs", "3000"]);
    const bridge = await startFixture("a2a-bridge", [nats.server.url, "procs"]);
    try {
      const card = `${bridge.hello.url as string}/a2a/proc-echo/.well-known/agent-card.json`;
      let ok = false;
      for (let i = 0; i < 100 && !ok; i++) {
        ok = (await fetch(card)).status === 200;
        if (!ok) await new Promise((r) => setTimeout(r, 100));
      }
      const client = await new ClientFactory().createFromUrl(card, "");
      const task = (await client.sendMessage(send("across processes"))) as SdkTask;
      expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
      expect(artifactText(task)).toBe("across processes");
      const events: StreamResponse[] = [];
      for await (const e of client.sendMessageStream(send("streamed"))) events.push(e);
      const last = events.at(-1)?.payload;
      expect(last?.$case === "statusUpdate" && last.value.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    } finally {
      await Promise.all([agent.kill(), bridge.kill()]);
    }
  }, 60_000);
});
