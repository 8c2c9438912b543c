/**
 * Task ownership through the HTTP gateway: two API keys acting as one bus
 * identity see, follow, list and cancel only their own tasks, over A2A (the
 * official SDK client), the monitor's `/v1` routes and MCP.
 */
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory, type Client } from "@a2a-js/sdk/client";
import { TaskState, type StreamResponse } from "@a2a-js/sdk";
import { Client as McpClient } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, Identity, type Bus, type Task } from "../../core/index.js";
import { hashApiKey } from "../../bridges/a2a/index.js";
import { createGateway } from "../../bridges/gateway/index.js";
import { eventually, quietLogger, testAdmin } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { sendRequest, userMessage } from "../helpers/a2a.js";

const send = (text: string, skill: string, returnImmediately = false) => sendRequest(text, { metadata: { skill } }, { returnImmediately });
const listQuery = { tenant: "", contextId: "", status: TaskState.TASK_STATE_UNSPECIFIED, pageSize: 100, pageToken: "", historyLength: undefined, statusTimestampAfter: undefined, includeArtifacts: undefined } as never;

/** The JSON-RPC code of an A2A client call's refusal (the SDK client's error keeps it as `envelopeCode`). */
async function rpcCode(p: Promise<unknown>): Promise<number | undefined> {
  const err = (await p.then(() => undefined, (e: unknown) => e)) as { envelopeCode?: number } | undefined;
  expect(err, "expected an A2A error").toBeDefined();
  return err?.envelopeCode;
}

async function drain(stream: AsyncIterable<StreamResponse>): Promise<StreamResponse[]> {
  const out: StreamResponse[] = [];
  for await (const e of stream) out.push(e);
  return out;
}

describe("task ownership behind the HTTP gateway", () => {
  const nats = useNatsServer();
  const tenant = "bown";
  const buses: Bus[] = [];
  let app: FastifyInstance;
  let base: string;
  let shared: Bus;
  let gates: Map<string, () => void>;

  const bus = async () => {
    const b = await connect({ servers: nats.server.url, tenant, identity: Identity.generate(), presenceMaxAgeMs: 3000, logger: quietLogger, trustRoot: [testAdmin.id], drainTimeoutMs: 300 });
    buses.push(b);
    return b;
  };

  beforeAll(async () => {
    const gatewayBus = await bus();
    // Two keys acting as one bus identity (one connection), a third as another identity.
    shared = await bus();
    const other = await bus();
    const agent = await connect({ servers: nats.server.url, tenant, identity: Identity.generate(), presenceMaxAgeMs: 3000, logger: quietLogger, trustRoot: [testAdmin.id], insecureAllowAll: true, drainTimeoutMs: 300 });
    buses.push(agent);
    gates = new Map();
    await agent.agent({ name: "worker", skills: [{ id: "hold" }, { id: "echo" }] }, {
      hold: (ctx) =>
        new Promise((resolve, reject) => {
          gates.set(ctx.taskId!, () => resolve(`released for ${ctx.caller}`));
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
        }),
      echo: (ctx) => `echo for ${ctx.caller}: ${ctx.text}`,
    });
    await eventually(() => gatewayBus.discover({ online: true }).length === 1 && shared.discover({ online: true }).length === 1);
    app = await createGateway({
      bus: gatewayBus,
      apiKeys: [
        { name: "key-1", sha256: hashApiKey("secret-1"), bus: shared },
        { name: "key-2", sha256: hashApiKey("secret-2"), bus: shared },
        { name: "key-3", sha256: hashApiKey("secret-3"), bus: other },
      ],
      keepAliveMs: 200,
    });
    base = await app.listen({ port: 0, host: "127.0.0.1" });
  }, 30_000);
  afterAll(async () => {
    await app?.close();
    await Promise.all(buses.map((b) => b.close()));
  });

  const a2a = (key: string): Promise<Client> => {
    const fetchImpl: typeof fetch = (input, init) => {
      const headers = new Headers(init?.headers);
      headers.set("X-API-Key", key);
      return fetch(input, { ...init, headers });
    };
    const options = ClientFactoryOptions.createFrom(ClientFactoryOptions.default, { transports: [new JsonRpcTransportFactory({ fetchImpl })] });
    return new ClientFactory(options).createFromUrl(`${base}/a2a/worker/.well-known/agent-card.json`, "");
  };
  const v1 = async (key: string, path: string) => {
    const res = await fetch(`${base}${path}`, { headers: { "X-API-Key": key } });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  it("A2A: key 2 gets task-not-found for key 1's task on GetTask, CancelTask, SubscribeToTask, push configs and a continuing message; ListTasks shows each key its own", async () => {
    const [one, two, three] = await Promise.all([a2a("secret-1"), a2a("secret-2"), a2a("secret-3")]);
    const held = (await one.sendMessage(send("wait", "hold", true))) as { id: string; status?: { state: TaskState } };
    const done = (await one.sendMessage(send("hi", "echo"))) as { id: string };
    const own2 = (await two.sendMessage(send("two", "echo"))) as { id: string };
    await eventually(() => gates.has(held.id));
    // Both keys' tasks carry the same submitter identity, and the caller that sent them.
    expect((await shared.task(held.id)).metadata).toMatchObject({ submitter: shared.id, caller: "key-1" });
    expect((await shared.task(own2.id)).metadata.caller).toBe("key-2");

    // Key 1 sees its task; key 2 (same identity) and key 3 (another identity) get -32001, as for no task at all.
    expect((await one.getTask({ tenant: "", id: held.id, historyLength: undefined })).id).toBe(held.id);
    for (const other of [two, three]) {
      for (const id of [held.id, "0123456789abcdef0123456789abcdef"]) {
        expect(await rpcCode(other.getTask({ tenant: "", id, historyLength: undefined }))).toBe(-32001);
        expect(await rpcCode(other.cancelTask({ tenant: "", id, metadata: undefined } as never))).toBe(-32001);
        expect(await rpcCode(drain(other.resubscribeTask({ tenant: "", id })))).toBe(-32001);
        expect(await rpcCode(other.listTaskPushNotificationConfig({ tenant: "", taskId: id, pageSize: 10, pageToken: "" } as never))).toBe(-32001);
      }
      // A message continuing key 1's task.
      expect(await rpcCode(other.sendMessage({ ...send("hijack", "hold"), message: userMessage("hijack", { metadata: { skill: "hold" }, taskId: held.id }) }))).toBe(-32001);
    }
    // The task is untouched: still running, not cancelled, no foreign message.
    const still = await shared.task(held.id);
    expect(still.status.state).toBe("TASK_STATE_WORKING");
    expect(JSON.stringify(still.history)).not.toContain("hijack");

    // ListTasks: each key its own.
    const listed = async (c: Client) => (await c.listTasks(listQuery)).tasks.map((t) => t.id).sort();
    expect(await listed(one)).toEqual([held.id, done.id].sort());
    expect(await listed(two)).toEqual([own2.id]);
    expect(await listed(three)).toEqual([]);

    // The agent saw who asked; bus internals stay hidden from A2A callers.
    const got = await one.getTask({ tenant: "", id: done.id, historyLength: undefined });
    expect(JSON.stringify(got.artifacts)).toContain("echo for key-1: hi");
    expect(got.metadata).not.toHaveProperty("caller");
    expect(got.metadata).not.toHaveProperty("submitter");

    // Key 1 follows and cancels its own task.
    const follow = one.resubscribeTask({ tenant: "", id: held.id });
    const first = await follow[Symbol.asyncIterator]().next();
    expect((first.value as StreamResponse).payload?.$case).toBe("task");
    expect((await one.cancelTask({ tenant: "", id: held.id, metadata: undefined } as never)).status?.state).toBe(TaskState.TASK_STATE_CANCELED);
  });

  it("monitor /v1: each key lists, reads and follows only its own tasks", async () => {
    const [one, two] = await Promise.all([a2a("secret-1"), a2a("secret-2")]);
    // Streams opened first: everything from here on arrives, filtered.
    const stream = async (key: string) => {
      const ac = new AbortController();
      const res = await fetch(`${base}/v1/events`, { headers: { "X-API-Key": key }, signal: ac.signal });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      let text = "";
      return {
        /** Reads until `needle` shows up in the stream (or fails after a while). */
        async until(needle: string) {
          const deadline = Date.now() + 10_000;
          while (!text.includes(needle)) {
            if (Date.now() > deadline) throw new Error(`${needle} never came`);
            text += new TextDecoder().decode((await reader.read()).value);
          }
          return text;
        },
        close: () => ac.abort(),
      };
    };
    const [s1, s2] = await Promise.all([stream("secret-1"), stream("secret-2")]);
    try {
      const t1 = (await one.sendMessage(send("from one", "echo"))) as { id: string };
      const t2 = (await two.sendMessage(send("from two", "echo"))) as { id: string };

      const list = async (key: string) => ((await v1(key, "/v1/tasks?pageSize=1000")).body.tasks as Task[]).map((t) => t.id);
      expect(await list("secret-1")).toContain(t1.id);
      expect(await list("secret-1")).not.toContain(t2.id);
      expect(await list("secret-2")).toContain(t2.id);
      expect(await list("secret-2")).not.toContain(t1.id);
      expect(await list("secret-3")).toEqual([]);

      expect((await v1("secret-1", `/v1/tasks/${t1.id}`)).status).toBe(200);
      const foreign = await v1("secret-2", `/v1/tasks/${t1.id}`);
      const unknown = await v1("secret-2", "/v1/tasks/00000000000000000000000000000000");
      expect(foreign.status).toBe(404);
      expect(foreign.body.code).toBe("TASK_NOT_FOUND");
      expect(unknown.status).toBe(404);

      // Key 2's stream shows its task, never key 1's (which came first).
      const seen2 = await s2.until(`"taskId":"${t2.id}"`);
      const seen1 = await s1.until(`"taskId":"${t1.id}"`);
      expect(seen2).not.toContain(t1.id);
      // Key 1's stream carries on past key 2's task without showing it.
      const t3 = (await one.sendMessage(send("again", "echo"))) as { id: string };
      expect(await s1.until(`"taskId":"${t3.id}"`)).not.toContain(t2.id);
      expect(seen1).toContain(t1.id);

      // Following one task by id: another key's is an empty stream (as for a task that does not exist).
      const byTask = await fetch(`${base}/v1/events?task=${t1.id}&from=1`, { headers: { "X-API-Key": "secret-2" }, signal: AbortSignal.timeout(1500) });
      expect(byTask.status).toBe(200);
      const body = await byTask.text().catch(() => "");
      expect(body).not.toContain(t1.id);
    } finally {
      s1.close();
      s2.close();
    }
  });

  it("MCP: a key's tool call is its task; other keys on the same identity do not see it", async () => {
    const client = new McpClient({ name: "t", version: "1" });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp`), { requestInit: { headers: { authorization: "Bearer secret-2" } } }));
    try {
      const result = (await client.callTool({ name: "echo", arguments: { text: "via mcp" } })) as CallToolResult;
      expect(result.content).toEqual([{ type: "text", text: "echo for key-2: via mcp" }]);
    } finally {
      await client.close();
    }
    const mine = ((await v1("secret-2", "/v1/tasks?pageSize=1000")).body.tasks as Task[]).find((t) => JSON.stringify(t.artifacts).includes("via mcp"));
    expect(mine?.metadata.caller).toBe("key-2");
    const theirs = ((await v1("secret-1", "/v1/tasks?pageSize=1000")).body.tasks as Task[]).map((t) => t.id);
    expect(theirs).not.toContain(mine!.id);
  });
});
