import Fastify, { type FastifyInstance } from "fastify";
import { jetstreamManager } from "@nats-io/jetstream";
import { ClientFactory, JsonRpcTransportFactory, RestTransportFactory, type CallInterceptor, type Client } from "@a2a-js/sdk/client";
import { GrpcTransportFactory } from "@a2a-js/sdk/client/grpc";
import { AgentCard as AgentCardCodec, TaskState, type StreamResponse, type Task as SdkTask } from "@a2a-js/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, Identity, type Bus, type ConnectOptions } from "../../core/index.js";
import { NATS_BINDING, NatsTransportFactory, a2aBridge, cardVerifier, hashApiKey, natsAgentCard } from "../../bridges/a2a/index.js";
import { quietLogger } from "../helpers/bus.js";
import { artifactText, sendRequest } from "../helpers/a2a.js";
import { useNatsServer } from "../helpers/nats.js";

const KEY = "bindings-key";

const send = sendRequest;
const list = (extra: { contextId?: string; includeArtifacts?: boolean; historyLength?: number } = {}) => ({
  tenant: "",
  contextId: extra.contextId ?? "",
  status: TaskState.TASK_STATE_UNSPECIFIED,
  pageSize: 10,
  pageToken: "",
  historyLength: extra.historyLength,
  statusTimestampAfter: undefined,
  includeArtifacts: extra.includeArtifacts,
});
const stateOf = (e: StreamResponse): TaskState | undefined =>
  e.payload?.$case === "task" ? e.payload.value.status?.state : e.payload?.$case === "statusUpdate" ? e.payload.value.status?.state : undefined;

/** Every call of the client carries the API key (as an HTTP header, or gRPC metadata). */
const withKey: CallInterceptor = {
  before: async (args) => {
    args.options = { ...args.options, serviceParameters: { ...args.options?.serviceParameters, "x-api-key": KEY } };
  },
  after: async () => {},
};

describe("A2A bindings: JSON-RPC, HTTP+JSON, gRPC and NATS with the official @a2a-js/sdk client", () => {
  const nats = useNatsServer();
  // Connections for the whole file, closed after it.
  const buses: Bus[] = [];
  const open = async (options: Partial<ConnectOptions>) => {
    const bus = await connect({ servers: nats.server.url, identity: Identity.generate(), presenceMaxAgeMs: 3000, logger: quietLogger, drainTimeoutMs: 300, ...options });
    buses.push(bus);
    return bus;
  };
  let app: FastifyInstance;
  let baseUrl: string;
  let bridgeBus: Bus;
  let keyBus: Bus;
  let natsClientBus: Bus;
  let release!: () => void;
  let echoBus: Bus;

  beforeAll(async () => {
    bridgeBus = await open({ tenant: "bind" });
    keyBus = await open({ tenant: "bind" });
    natsClientBus = await open({ tenant: "bind" });
    const agentBus = (echoBus = await open({ tenant: "bind", insecureAllowAll: true }));
    let gate = new Promise<void>((r) => (release = r));
    await agentBus.agent({ name: "echo", skills: [{ id: "echo", description: "echo the text" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    const waiterBus = await open({ tenant: "bind", insecureAllowAll: true });
    await waiterBus.agent({ name: "waiter", skills: [{ id: "wait" }, { id: "ask" }, { id: "gated" }] }, {
      wait: (ctx) => new Promise((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
      ask: async (ctx) => {
        if (ctx.history.length < 2) return ctx.inputRequired("name?");
        await ctx.artifact("Hello ", { artifactId: "g", lastChunk: false });
        return `${ctx.text}!`;
      },
      gated: async () => {
        await gate;
        gate = new Promise<void>((r) => (release = r));
        return "opened";
      },
    });
    for (const b of [bridgeBus, natsClientBus]) for (let i = 0; i < 100 && b.discover({ online: true }).length < 2; i++) await new Promise((r) => setTimeout(r, 50));
    app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    await app.register(a2aBridge, { bus: bridgeBus, apiKeys: [{ name: "bindings", sha256: hashApiKey(KEY), bus: keyBus }], grpc: { port: 0 } });
    baseUrl = await app.listen({ port: 0, host: "127.0.0.1" });
  });
  afterAll(async () => {
    await app?.close();
    await Promise.all(buses.map((b) => b.close()));
  });

  const bindings = ["JSONRPC", "HTTP+JSON", "GRPC", NATS_BINDING] as const;

  /** A client of `agent` (the gateway without one) over `binding`, built from the card the gateway serves. */
  async function clientOver(binding: (typeof bindings)[number], agent?: string): Promise<Client> {
    const factory = new ClientFactory({
      transports: [new JsonRpcTransportFactory(), new RestTransportFactory(), new GrpcTransportFactory(), new NatsTransportFactory(natsClientBus)],
      preferredTransports: [binding],
      clientConfig: { interceptors: [withKey] },
    });
    const path = agent === undefined ? "/.well-known/agent-card.json" : `/a2a/${agent}/.well-known/agent-card.json`;
    const client = await factory.createFromUrl(`${baseUrl}${path}`, "");
    expect(client.transport.protocolName).toBe(binding);
    return client;
  }
  /** The tasks the binding's caller owns are read through its own identity: the key's, or the NATS client's. */
  const ownerOf = (binding: string) => (binding === NATS_BINDING ? natsClientBus : keyBus);

  it("cards list every binding: JSON-RPC, HTTP+JSON, gRPC (the agent as the interface's tenant) and NATS", async () => {
    const card = (await (await fetch(`${baseUrl}/a2a/echo/.well-known/agent-card.json`, { headers: { "A2A-Version": "1.0" } })).json()) as { supportedInterfaces: Array<Record<string, string>> };
    const grpc = card.supportedInterfaces.find((i) => i.protocolBinding === "GRPC")!;
    expect(card.supportedInterfaces.map((i) => `${i.protocolBinding} ${i.protocolVersion}`)).toEqual(["JSONRPC 1.0", "HTTP+JSON 1.0", "GRPC 1.0", `${NATS_BINDING} 1.0`, "JSONRPC 0.3"]);
    expect(card.supportedInterfaces[1]!.url).toBe(`${baseUrl}/a2a/echo/rest`);
    expect(grpc).toMatchObject({ tenant: "echo" });
    expect(grpc.url).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(card.supportedInterfaces[3]!.url).toBe("nats:///bind/echo");
    const gateway = (await (await fetch(`${baseUrl}/.well-known/agent-card.json`, { headers: { "A2A-Version": "1.0" } })).json()) as { supportedInterfaces: Array<Record<string, string>> };
    expect(gateway.supportedInterfaces.find((i) => i.protocolBinding === "GRPC")).not.toHaveProperty("tenant");
    expect(gateway.supportedInterfaces.find((i) => i.protocolBinding === "HTTP+JSON")!.url).toBe(`${baseUrl}/a2a/rest`);
  });

  describe.each(bindings)("over %s", (binding) => {
    it("SendMessage (blocking), GetTask with historyLength, ListTasks with and without artifacts, the gateway routing by skill", async () => {
      const client = await clientOver(binding, "echo");
      const task = (await client.sendMessage(send("hi"))) as SdkTask;
      expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
      expect(artifactText(task)).toBe("echo: hi");
      expect((await ownerOf(binding).task(task.id)).metadata.submitter).toBe(ownerOf(binding).id);
      const got = await client.getTask({ tenant: "", id: task.id, historyLength: 1 });
      expect(got.history).toHaveLength(1);
      expect(artifactText(got)).toBe("echo: hi");
      const bare = await client.listTasks(list({ contextId: task.contextId }));
      expect(bare.tasks.map((t) => t.id)).toEqual([task.id]);
      expect(bare.tasks[0]!.artifacts).toEqual([]);
      const full = await client.listTasks(list({ contextId: task.contextId, includeArtifacts: true, historyLength: 0 }));
      expect(artifactText(full.tasks[0]!)).toBe("echo: hi");
      expect(full.tasks[0]!.history).toEqual([]);
      const gateway = await clientOver(binding);
      const routed = (await gateway.sendMessage(send("via gateway", { metadata: { skill: "echo" } }))) as SdkTask;
      expect(artifactText(routed)).toBe("echo: via gateway");
    });

    it("returnImmediately, CancelTask, and the spec's errors as the SDK's error classes", async () => {
      const client = await clientOver(binding, "waiter");
      const submitted = (await client.sendMessage(send("x", { metadata: { skill: "wait" } }, { returnImmediately: true }))) as SdkTask;
      expect([TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING]).toContain(submitted.status?.state);
      const canceled = await client.cancelTask({ tenant: "", id: submitted.id, metadata: undefined });
      expect(canceled.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
      await expect(client.cancelTask({ tenant: "", id: submitted.id, metadata: undefined })).rejects.toMatchObject({ name: "TaskNotCancelableError" });
      await expect(client.getTask({ tenant: "", id: "no-such-task", historyLength: undefined })).rejects.toMatchObject({ name: "TaskNotFoundError" });
      await expect(client.getTask({ tenant: "", id: "not a task id!", historyLength: undefined })).rejects.toMatchObject({ name: "TaskNotFoundError" });
      await expect(client.transport.getExtendedAgentCard({ tenant: "" }, { serviceParameters: { "x-api-key": KEY, "A2A-Version": "1.0" } })).rejects.toMatchObject({ name: "ExtendedAgentCardNotConfiguredError" });
      // A message to a task in a terminal state.
      await expect(client.sendMessage(send("more", { taskId: submitted.id }))).rejects.toMatchObject({ name: "UnsupportedOperationError" });
      await expect(client.sendMessage(send("x", { metadata: { skill: "nope" } }))).rejects.toMatchObject({ name: "RequestMalformedError" });
    });

    it("SendStreamingMessage through a multi-turn task; SubscribeToTask follows a task to its end", async () => {
      const client = await clientOver(binding, "waiter");
      const first: StreamResponse[] = [];
      for await (const e of client.sendMessageStream(send("hi", { metadata: { skill: "ask" } }))) first.push(e);
      expect(stateOf(first.at(-1)!)).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);
      const task = first[0]!.payload?.$case === "task" ? first[0]!.payload.value : undefined;
      expect(task).toBeDefined();
      const second: StreamResponse[] = [];
      for await (const e of client.sendMessageStream(send("Ada", { taskId: task!.id }))) second.push(e);
      expect(stateOf(second.at(-1)!)).toBe(TaskState.TASK_STATE_COMPLETED);
      expect(second.some((e) => e.payload?.$case === "artifactUpdate")).toBe(true);

      const gated = (await client.sendMessage(send("x", { metadata: { skill: "gated" } }, { returnImmediately: true }))) as SdkTask;
      const seen: StreamResponse[] = [];
      const following = (async () => {
        for await (const e of client.resubscribeTask({ tenant: "", id: gated.id })) {
          seen.push(e);
          if (seen.length === 1) release();
        }
      })();
      await following;
      expect(seen[0]!.payload?.$case).toBe("task");
      expect(stateOf(seen.at(-1)!)).toBe(TaskState.TASK_STATE_COMPLETED);
      // A task in a terminal state cannot be subscribed to.
      await expect(
        (async () => {
          for await (const _ of client.resubscribeTask({ tenant: "", id: gated.id }));
        })(),
      ).rejects.toMatchObject({ name: "UnsupportedOperationError" });
    });

    it(binding === NATS_BINDING ? "push notification configs are the gateway's: PushNotificationNotSupportedError" : "push notification configs: create, get, list, delete", async () => {
      const client = await clientOver(binding, "echo");
      const task = (await client.sendMessage(send("push"))) as SdkTask;
      const config = { tenant: "", id: "", taskId: task.id, url: "https://hooks.example.com/a2a", token: "t", authentication: undefined };
      if (binding === NATS_BINDING) {
        await expect(client.createTaskPushNotificationConfig(config)).rejects.toMatchObject({ name: "PushNotificationNotSupportedError" });
        return;
      }
      const created = await client.createTaskPushNotificationConfig(config);
      expect(created.id).not.toBe("");
      expect((await client.getTaskPushNotificationConfig({ tenant: "", taskId: task.id, id: created.id })).url).toBe(config.url);
      expect((await client.listTaskPushNotificationConfig({ tenant: "", taskId: task.id, pageSize: 10, pageToken: "" })).configs).toHaveLength(1);
      await client.deleteTaskPushNotificationConfig({ tenant: "", taskId: task.id, id: created.id });
      expect((await client.listTaskPushNotificationConfig({ tenant: "", taskId: task.id, pageSize: 10, pageToken: "" })).configs).toHaveLength(0);
    });

    it("SubscribeToTask with Last-Event-ID resumes after the cursor: every later event, no gap, no duplicate", async () => {
      const client = await clientOver(binding, "waiter");
      const gated = (await client.sendMessage(send("x", { metadata: { skill: "gated" } }, { returnImmediately: true }))) as SdkTask;
      const cursorOf = (e: StreamResponse) => Number((e.payload?.value as { metadata?: Record<string, unknown> } | undefined)?.metadata?.["agentbus.cursor"]);
      // The task as it is now, with its cursor; then the client goes away.
      const abort = new AbortController();
      const first = client.resubscribeTask({ tenant: "", id: gated.id }, { signal: abort.signal });
      const snapshot = (await first.next()).value as StreamResponse;
      expect(snapshot.payload?.$case).toBe("task");
      const cursor = cursorOf(snapshot);
      expect(Number.isInteger(cursor)).toBe(true);
      abort.abort();
      await first.return(undefined).catch(() => {});
      // The task finishes while the client is away; it comes back with its cursor.
      release();
      await (await ownerOf(binding).taskHandle(gated.id)).result({ timeout: 10_000 });
      const resumed: StreamResponse[] = [];
      for await (const e of client.resubscribeTask({ tenant: "", id: gated.id }, { serviceParameters: { "x-api-key": KEY, "Last-Event-ID": String(cursor) } })) resumed.push(e);
      const stored: number[] = [];
      for await (const { sequence } of (await ownerOf(binding).taskHandle(gated.id)).events({ fromSequence: cursor + 1, untilTerminal: true })) stored.push(sequence);
      expect(resumed.map((e) => e.payload?.$case)).not.toContain("task");
      expect(resumed.map(cursorOf)).toEqual(stored);
      expect(stored.length).toBeGreaterThan(0);
      expect(stateOf(resumed.at(-1)!)).toBe(TaskState.TASK_STATE_COMPLETED);
    });

    it("a client that drops a stream stops the relay's consumer within a second; the task runs on", async () => {
      const client = await clientOver(binding, "waiter");
      const jsm = await jetstreamManager(bridgeBus.nc);
      const consumers = async () => (await jsm.streams.info("MESH_BIND_EVENTS")).state.consumer_count;
      const before = await consumers();
      const abort = new AbortController();
      const events = client.sendMessageStream(send("x", { metadata: { skill: "gated" } }), { signal: abort.signal });
      const first = await events.next();
      const id = first.value && first.value.payload?.$case === "task" ? first.value.payload.value.id : "";
      // The client waits for the next event: the relay follows the task's events with a consumer…
      const waiting = events.next().catch(() => undefined);
      const until = async (done: () => Promise<boolean>) => {
        const start = Date.now();
        while (!(await done()) && Date.now() - start < 1_000) await new Promise((r) => setTimeout(r, 20));
        return done();
      };
      expect(await until(async () => (await consumers()) > before)).toBe(true);
      // …which is gone within a second of the client leaving, while the task still waits (no event to wake the relay).
      abort.abort();
      await waiting;
      await events.return(undefined).catch(() => {});
      expect(await until(async () => (await consumers()) === before)).toBe(true);
      release();
      expect((await (await ownerOf(binding).taskHandle(id)).result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    });
  });

  it("a card for A2A over NATS straight from the registry: no HTTP at all", async () => {
    const factory = new ClientFactory({ transports: [new NatsTransportFactory(natsClientBus)] });
    const client = await factory.createFromAgentCard(natsAgentCard(natsClientBus, "echo"));
    const task = (await client.sendMessage(send("direct"))) as SdkTask;
    expect(artifactText(task)).toBe("echo: direct");
    // A card of another tenant is refused by this connection's transport.
    const other = natsAgentCard(natsClientBus, "echo");
    other.supportedInterfaces[0]!.url = other.supportedInterfaces[0]!.url.replace("/bind/", "/other/");
    await expect(factory.createFromAgentCard(other)).rejects.toMatchObject({ code: "INVALID_INPUT" });
  });

  it("signed cards: served cards by the bridge's identity, registered cards by the agent's own key; a changed card fails the client's check", async () => {
    for (const path of ["/a2a/echo/.well-known/agent-card.json", "/.well-known/agent-card.json"]) {
      const client = await new ClientFactory({ transports: [new JsonRpcTransportFactory()] }).createFromUrl(`${baseUrl}${path}`, "");
      const served = await client.getAgentCard(undefined, cardVerifier({ trusted: [bridgeBus.id] }));
      const header = JSON.parse(Buffer.from(served.signatures[0]!.protected, "base64url").toString()) as Record<string, string>;
      expect(header).toEqual({ alg: "EdDSA", kid: bridgeBus.id, typ: "JOSE", jku: `${baseUrl}/.well-known/jwks.json` });
      // Another signer is not trusted; a card changed after signing fails.
      await expect(client.getAgentCard(undefined, cardVerifier({ trusted: [echoBus.id] }))).rejects.toThrow(/No valid signatures/);
      const json = AgentCardCodec.toJSON(served) as { supportedInterfaces: Array<{ url: string }> };
      json.supportedInterfaces[0]!.url = "https://attacker.example/a2a";
      await expect(cardVerifier()(AgentCardCodec.fromJSON(json))).rejects.toThrow(/No valid signatures/);
    }
    // The JWK set names the bridge's key (and each agent's).
    const jwks = (await (await fetch(`${baseUrl}/.well-known/jwks.json`)).json()) as { keys: Array<{ kid: string; kty: string; crv: string }> };
    expect(jwks.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([bridgeBus.id, echoBus.id]));
    expect(jwks.keys[0]).toMatchObject({ kty: "OKP", crv: "Ed25519" });
    // The registered card, read over NATS, is the agent's own: signed with its key, and only its key.
    const registered = natsAgentCard(natsClientBus, "echo");
    await cardVerifier({ trusted: [echoBus.id] })(registered);
    await expect(cardVerifier({ trusted: [bridgeBus.id] })(registered)).rejects.toThrow(/No valid signatures/);
    await expect(cardVerifier()({ ...registered, description: "something else" })).rejects.toThrow(/No valid signatures/);
  });

  it("gRPC calls are rate-limited per caller: RESOURCE_EXHAUSTED past the limit", async () => {
    const limited = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    await limited.register(a2aBridge, { bus: bridgeBus, open: true, push: false, grpc: { port: 0 }, rateLimit: { max: 2, timeWindowMs: 60_000 } });
    const url = await limited.listen({ port: 0, host: "127.0.0.1" });
    try {
      const client = await new ClientFactory({ transports: [new GrpcTransportFactory()], preferredTransports: ["GRPC"] }).createFromUrl(`${url}/a2a/echo/.well-known/agent-card.json`, "");
      const get = () => client.getTask({ tenant: "", id: "no-such-task", historyLength: undefined });
      await expect(get()).rejects.toMatchObject({ name: "TaskNotFoundError" });
      await expect(get()).rejects.toMatchObject({ name: "TaskNotFoundError" });
      await expect(get()).rejects.toThrow(/RESOURCE_EXHAUSTED|rate limit exceeded/);
    } finally {
      await limited.close();
    }
  });

  it("refuses calls without a valid key on HTTP+JSON (401) and gRPC (UNAUTHENTICATED)", async () => {
    const rest = await fetch(`${baseUrl}/a2a/echo/rest/tasks`, { headers: { "A2A-Version": "1.0" } });
    expect(rest.status).toBe(401);
    const bare = new ClientFactory({ transports: [new GrpcTransportFactory()], preferredTransports: ["GRPC"] });
    const client = await bare.createFromUrl(`${baseUrl}/a2a/echo/.well-known/agent-card.json`, "");
    await expect(client.sendMessage(send("no key"))).rejects.toThrow(/UNAUTHENTICATED|missing or invalid API key/);
    // A REST request without A2A-Version is v0.3, which this binding does not serve.
    const old = await fetch(`${baseUrl}/a2a/echo/rest/tasks`, { headers: { "x-api-key": KEY } });
    expect(old.status).toBe(400);
    expect(((await old.json()) as { error: { details: Array<{ reason?: string }> } }).error.details[0]?.reason).toBe("VERSION_NOT_SUPPORTED");
  });
});
