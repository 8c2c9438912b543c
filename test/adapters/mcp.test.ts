import { fileURLToPath } from "node:url";
import Fastify from "fastify";
import { Message as SdkMessageCodec, TaskState, type Task as SdkTask } from "@a2a-js/sdk";
import { ClientFactory } from "@a2a-js/sdk/client";
import { jetstream } from "@nats-io/jetstream";
import { afterEach, describe, expect, it } from "vitest";
import { AgentBusError, textOf, type Bus, type Part, type Task } from "../../core/index.js";
import { AUDIT_KIND, capabilityOf, parseMcpGatewayConfig, startMcpGateway, type CallAudit, type McpGateway, type McpGatewayOptions } from "../../adapters/mcp/index.js";
import { mapTools } from "../../adapters/mcp/names.js";
import { a2aBridge } from "../../bridges/a2a/index.js";
import { eventually, grant, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { startFixture, type FixtureProcess } from "../helpers/process.js";

const EVERYTHING = fileURLToPath(new URL("../../node_modules/@modelcontextprotocol/server-everything/dist/index.js", import.meta.url));
const everything = { command: process.execPath, args: [EVERYTHING] };
/** A 2026-07-28-only server (SDK v2, `legacy: 'reject'`): over HTTP as a fixture process, over stdio as the gateway's child. */
const MODERN = fileURLToPath(new URL("../fixtures/mcp-modern-server.ts", import.meta.url));
const modernStdio = { command: process.execPath, args: ["--import", "tsx", MODERN, "stdio"] };
/** The revisions: the one the modern fixture speaks; the one the 2025-era servers (SDK v1: server-everything, the HTTP fixture) settle on. */
const MODERN_REVISION = "2026-07-28";
const LEGACY_REVISION = "2025-11-25";

const partsOf = (t: Task): Part[] => t.artifacts.flatMap((a) => a.parts);
const reason = (t: Task) => (t.status.message ? textOf(t.status.message) : "");
const failure = (p: Promise<unknown>) => p.then(() => expect.fail("expected a failure"), (e: unknown) => e as AgentBusError);

/** Every audit record of one kind stored so far (gateway tool calls by default). */
async function auditRecords(bus: Bus, kind = AUDIT_KIND): Promise<Array<CallAudit & { by: string; from?: string; code?: string }>> {
  const consumer = await jetstream(bus.nc).consumers.get(bus.subjects.stream("AUDIT"), { filter_subjects: bus.subjects.audit(kind) });
  if ((await consumer.info()).num_pending === 0) return [];
  const out: Array<CallAudit & { by: string }> = [];
  const messages = await consumer.consume();
  for await (const m of messages) {
    out.push(m.json());
    if (m.info.pending === 0) break;
  }
  messages.stop();
  return out;
}

describe("MCP gateway adapter", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 500 });
  const gateways: McpGateway[] = [];
  const fixtures: FixtureProcess[] = [];
  // Registered after useBuses: runs first, so gateways drain before their buses close.
  afterEach(async () => {
    await Promise.all(gateways.splice(0).map((g) => g.close()));
    await Promise.all(fixtures.splice(0).map((f) => f.kill("SIGKILL")));
  });
  const start = async (options: McpGatewayOptions) => {
    const g = await startMcpGateway(options);
    gateways.push(g);
    return g;
  };
  const fixture = async (args: string[], name = "mcp-http-server") => {
    const f = await startFixture(name, args);
    fixtures.push(f);
    return f;
  };

  it("server-everything over stdio: tools as capabilities, calls and tasks, content mapping, invalid input, restart after SIGKILL, audit without arguments", async () => {
    const gatewayBus = await open({ tenant: "stdio", insecureAllowAll: true });
    const gateway = await start({
      bus: gatewayBus,
      servers: { everything: { ...everything, env: { EVERYTHING_TOKEN: "env-secret-314" } } },
      restart: { minDelayMs: 100 },
      tasks: { backoffMs: 200 },
    });
    const client = await open({ tenant: "stdio" });
    await eventually(() => client.discover({ capability: "mcp.everything.echo", online: true }).length === 1);
    // A 2025-era server: the `server/discover` probe (on a sibling process) fails, and the `initialize` handshake follows.
    expect(gateway.servers().everything).toMatchObject({ transport: "stdio", connected: true, protocolVersion: LEGACY_REVISION });

    const [info] = client.discover({ capability: "mcp.everything.get-sum" });
    expect(info!.name).toBe("mcp-gateway");
    expect(info!.capabilities).toEqual(expect.arrayContaining(["mcp.everything.echo", "mcp.everything.get-sum", "mcp.everything.get-structured-content", "mcp.everything.get-tiny-image", "mcp.everything.get-resource-links"]));
    expect(info!.schemas["mcp.everything.get-sum"]!.input).toMatchObject({ type: "object", required: ["a", "b"] });
    expect(info!.schemas["mcp.everything.get-sum"]!.input).not.toHaveProperty("$schema");
    expect(info!.schemas["mcp.everything.get-structured-content"]!.output).toMatchObject({ required: ["temperature", "conditions", "humidity"] });
    expect(gateway.tools().find((t) => t.capability === "mcp.everything.get-sum")).toMatchObject({ server: "everything", tool: "get-sum" });

    // A fast call and a durable task.
    expect(textOf(await client.call("mcp.everything.echo", { message: "secret-arg-1" }))).toBe("Echo: secret-arg-1");
    const sum = await (await client.submit("mcp.everything.get-sum", { a: 2, b: 40 })).result();
    expect(sum.status.state).toBe("TASK_STATE_COMPLETED");
    expect(partsOf(sum).map((p) => p.text)).toEqual(["The sum of 2 and 40 is 42."]);

    // structuredContent → a data part (next to the text block); images → raw parts; resource links → url parts.
    const weather = await (await client.submit("mcp.everything.get-structured-content", { location: "Chicago" })).result();
    expect(weather.status.state).toBe("TASK_STATE_COMPLETED");
    expect(partsOf(weather)).toContainEqual({ data: { temperature: 36, conditions: "Light rain / drizzle", humidity: 82 } });
    const image = (await client.call("mcp.everything.get-tiny-image", {})).parts.find((p) => p.raw);
    expect(image).toMatchObject({ mediaType: "image/png", metadata: { mcpType: "image" } });
    expect(Buffer.from(image!.raw!, "base64").subarray(1, 4).toString()).toBe("PNG");
    const links = (await client.call("mcp.everything.get-resource-links", { count: 2 })).parts.filter((p) => p.url);
    expect(links).toHaveLength(2);
    expect(links[0]!.url).toMatch(/^demo:\/\/resource\//);

    // Invalid arguments: refused by the bus against the tool's schema, before the server sees them.
    const invalid = await failure(client.call("mcp.everything.get-sum", { a: "two" }));
    expect(invalid.code).toBe("INVALID_INPUT");
    expect(invalid.message).toMatch(/must be number|required property 'b'/);
    const invalidTask = await (await client.submit("mcp.everything.get-sum", { a: 1 })).result();
    expect(invalidTask.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(invalidTask)).toMatch(/required property 'b'/);

    // MCP progress → the task's status updates. (Only the earlier steps are checked: the SDK's client
    // dispatches notifications a tick after responses, so a last step sent just before the result is dropped.)
    const op = await (await client.submit("mcp.everything.trigger-long-running-operation", { duration: 0.6, steps: 3 })).result();
    expect(op.status.state).toBe("TASK_STATE_COMPLETED");
    expect(op.history.map(textOf)).toEqual(expect.arrayContaining(["trigger-long-running-operation: 1/3", "trigger-long-running-operation: 2/3"]));

    // A bus cancel cancels the MCP request.
    const long = await client.submit("mcp.everything.trigger-long-running-operation", { duration: 30, steps: 3 });
    await eventually(async () => (await long.get()).status.state === "TASK_STATE_WORKING");
    expect((await long.cancel()).status.state).toBe("TASK_STATE_CANCELED");

    // SIGKILL the server: it is restarted (and its tools listed again) without waiting for a call.
    const pid = gateway.servers().everything!.pid!;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, "SIGKILL");
    await eventually(() => gateway.servers().everything!.connected && gateway.servers().everything!.pid !== pid, 15_000);
    expect(gateway.servers().everything!.tools).toBeGreaterThan(5);
    expect(textOf(await client.call("mcp.everything.echo", { message: "again" }))).toBe("Echo: again");
    // Killed again, with a task submitted at once: the task completes on the restarted server.
    process.kill(gateway.servers().everything!.pid!, "SIGKILL");
    const during = await client.submit("mcp.everything.echo", { message: "during the crash" });
    const survived = await during.result({ timeout: 20_000 });
    expect(survived.status.state).toBe("TASK_STATE_COMPLETED");
    expect(partsOf(survived)[0]!.text).toBe("Echo: during the crash");

    // Audit: caller, tool, outcome, duration; never argument values or the server's environment.
    const records = (await eventually(async () => {
      const r = await auditRecords(client);
      return r.filter((x) => x.caller === client.id && x.outcome === "ok").length >= 6 ? r : undefined;
    }))!;
    expect(records).toContainEqual(expect.objectContaining({ kind: AUDIT_KIND, by: gatewayBus.id, caller: client.id, capability: "mcp.everything.echo", server: "everything", tool: "echo", outcome: "ok", durationMs: expect.any(Number) }));
    expect(records).toContainEqual(expect.objectContaining({ capability: "mcp.everything.get-sum", outcome: "ok", task: sum.id }));
    await eventually(async () => (await auditRecords(client)).some((r) => r.task === long.id && r.outcome === "canceled"));
    expect(JSON.stringify(records)).not.toMatch(/secret-arg|env-secret|Chicago|during the crash/);
  }, 90_000);

  it("per-tool ACL: a caller without a grant for the tool is denied (and audited); one with it is served", async () => {
    const gatewayBus = await open({ tenant: "acl" });
    await start({ bus: gatewayBus, servers: { everything } });
    const alice = await open({ tenant: "acl" });
    const bob = await open({ tenant: "acl" });
    await grant(gatewayBus, "alice-echo", { source: alice.id, target: gatewayBus.id, capabilities: ["mcp.everything.echo"] });
    await grant(gatewayBus, "bob-sum", { source: bob.id, target: gatewayBus.id, capabilities: ["mcp.everything.get-sum"] });
    await eventually(() => gatewayBus.acl.allows(alice.id, gatewayBus.id, "mcp.everything.echo") && gatewayBus.acl.allows(bob.id, gatewayBus.id, "mcp.everything.get-sum"));
    await eventually(() => bob.discover({ capability: "mcp.everything.echo", online: true }).length === 1);

    expect(textOf(await alice.call("mcp.everything.echo", { message: "hi" }))).toBe("Echo: hi");
    expect(textOf(await bob.call("mcp.everything.get-sum", { a: 1, b: 2 }))).toBe("The sum of 1 and 2 is 3.");
    expect((await failure(bob.call("mcp.everything.echo", { message: "hi" }))).code).toBe("DENIED");
    expect((await failure(alice.call("mcp.everything.get-sum", { a: 1, b: 2 }))).code).toBe("DENIED");
    const deniedTask = await (await bob.submit("mcp.everything.echo", { message: "hi" })).result();
    expect(deniedTask.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(deniedTask)).toMatch(/DENIED|may not invoke/);

    const denied = (await eventually(async () => {
      const r = await auditRecords(bob, "denied");
      return r.length >= 2 ? r : undefined;
    }))!;
    expect(denied).toContainEqual(expect.objectContaining({ code: "DENIED", from: bob.id, agent: gatewayBus.id }));
    expect(denied).toContainEqual(expect.objectContaining({ code: "DENIED", from: alice.id, agent: gatewayBus.id }));
    // Only the calls the ACL let through reached the gateway, each under its caller's identity.
    const records = (await eventually(async () => {
      const r = await auditRecords(bob);
      return r.length >= 2 ? r : undefined;
    }))!;
    expect(records.map((r) => [r.caller, r.tool, r.outcome]).sort()).toEqual([[alice.id, "echo", "ok"], [bob.id, "get-sum", "ok"]].sort());
  }, 60_000);

  it("Streamable HTTP: headers sent, tool errors and timeouts fail clearly, list_changed re-registers, replicas share calls", async () => {
    const server = await fixture(["0", "fixture-token"]);
    const url = server.hello.url as string;
    const config = { servers: { web: { url, headers: { authorization: "Bearer fixture-token" }, timeoutMs: 1000 } }, tasks: { maxDeliver: 2, backoffMs: 50 } };
    const gatewayBus = await open({ tenant: "http", insecureAllowAll: true });
    const gateway = await start({ bus: gatewayBus, ...config });
    expect(gateway.servers().web).toMatchObject({ transport: "http", connected: true, protocolVersion: LEGACY_REVISION, circuit: "closed", tools: 5 });
    const client = await open({ tenant: "http" });
    await eventually(() => client.discover({ capability: "mcp.web.shout", online: true }).length === 1);

    expect(textOf(await client.call("mcp.web.shout", { text: "hello" }))).toBe("HELLO");

    // isError → the task FAILED with the tool's text; as a fast call, HANDLER_FAILED.
    const boom = await (await client.submit("mcp.web.boom", {})).result();
    expect(boom.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(boom)).toMatch(/boom \(MCP server web\) failed: kaboom: the tool broke/);
    const boomCall = await failure(client.call("mcp.web.boom", {}));
    expect([boomCall.code, boomCall.message]).toEqual(["HANDLER_FAILED", expect.stringMatching(/kaboom/)]);

    // The per-server timeout.
    const slow = await failure(client.call("mcp.web.slow", { ms: 3000 }));
    expect([slow.code, slow.message]).toEqual(["TIMEOUT", "MCP server web did not answer slow within 1000 ms"]);

    // A tool added at run time is announced and offered on the bus.
    expect(textOf(await client.call("mcp.web.add-tool", { name: "Late/Comer" }))).toBe("added Late/Comer");
    await eventually(() => client.discover({ capability: "mcp.web.late_comer", online: true }).length === 1);
    expect(textOf(await client.call("mcp.web.late_comer", {}))).toBe("Late/Comer ran");
    // The registration is visible on the bus a moment before start() records it.
    await eventually(() => gateway.tools().some((t) => t.capability === "mcp.web.late_comer"));

    // A second replica with the same configuration: calls are shared through the queue groups.
    const replicaBus = await open({ tenant: "http", insecureAllowAll: true });
    await start({ bus: replicaBus, ...config });
    await eventually(() => client.discover({ capability: "mcp.web.late_comer", online: true }).length === 2);
    for (let i = 0; i < 20; i++) expect(textOf(await client.call("mcp.web.shout", { text: `n${i}` }))).toBe(`N${i}`);
    const records = (await eventually(async () => {
      const r = await auditRecords(client);
      return r.filter((x) => x.tool === "shout").length >= 21 ? r : undefined;
    }))!;
    expect(new Set(records.filter((r) => r.tool === "shout").map((r) => r.by))).toEqual(new Set([gatewayBus.id, replicaBus.id]));
    expect(records).toContainEqual(expect.objectContaining({ tool: "boom", outcome: "tool_error" }));
    expect(records).toContainEqual(expect.objectContaining({ tool: "slow", outcome: "timeout" }));
    expect(JSON.stringify(records)).not.toMatch(/fixture-token|hello|authorization/i);
  }, 60_000);

  it("a 2026-07-28-only server over Streamable HTTP: negotiated statelessly; tools as capabilities; calls and tasks, structured results, progress, tool errors, cancel; list changes heard on subscriptions/listen; a restart needs no session", async () => {
    const server = await fixture(["http", "0"], "mcp-modern-server");
    const url = server.hello.url as string;
    const gatewayBus = await open({ tenant: "modern", insecureAllowAll: true });
    const gateway = await start({ bus: gatewayBus, servers: { next: { url, timeoutMs: 5000 } }, tasks: { maxDeliver: 2, backoffMs: 100 } });
    // The server refuses `initialize`: only the 2026-07-28 revision joins it.
    expect(gateway.servers().next).toMatchObject({ transport: "http", connected: true, protocolVersion: MODERN_REVISION, circuit: "closed", tools: 8 });
    const client = await open({ tenant: "modern" });
    await eventually(() => client.discover({ capability: "mcp.next.greet", online: true }).length === 1);

    const [info] = client.discover({ capability: "mcp.next.forecast" });
    expect(info!.name).toBe("mcp-gateway");
    expect(info!.capabilities).toEqual(expect.arrayContaining(["mcp.next.greet", "mcp.next.forecast", "mcp.next.countdown", "mcp.next.revision", "mcp.next.fail"]));
    expect(info!.schemas["mcp.next.forecast"]!.input).toMatchObject({ type: "object", required: ["city"] });
    expect(info!.schemas["mcp.next.forecast"]!.output).toMatchObject({ required: ["city", "temperature", "conditions"] });
    expect(gateway.tools().find((t) => t.capability === "mcp.next.forecast")).toMatchObject({ server: "next", tool: "forecast", title: "Weather forecast" });

    // A fast call; each request carries the revision's `_meta` envelope (the server reads the revision from it).
    expect(textOf(await client.call("mcp.next.greet", { name: "Ada" }))).toBe("Hello, Ada!");
    expect((await client.call("mcp.next.revision", {})).parts).toContainEqual({ data: { revision: MODERN_REVISION } });

    // A durable task with a structured result: the text block and a data part.
    const forecast = await (await client.submit("mcp.next.forecast", { city: "Lisbon" })).result();
    expect(forecast.status.state).toBe("TASK_STATE_COMPLETED");
    expect(partsOf(forecast)).toContainEqual({ data: { city: "Lisbon", temperature: 21.5, conditions: "sunny" } });

    // Progress (on the request's own SSE stream in this revision) → the task's status updates.
    const countdown = await (await client.submit("mcp.next.countdown", { steps: 3, ms: 150 })).result();
    expect(countdown.status.state).toBe("TASK_STATE_COMPLETED");
    expect(partsOf(countdown).map((p) => p.text)).toEqual(["liftoff after 3 steps"]);
    expect(countdown.history.map(textOf)).toEqual(expect.arrayContaining(["counting: 1/3", "counting: 2/3"]));

    // isError → FAILED with the tool's text; invalid input refused by the bus first.
    const failed = await (await client.submit("mcp.next.fail", {})).result();
    expect(failed.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(failed)).toMatch(/fail \(MCP server next\) failed: the modern tool broke/);
    expect((await failure(client.call("mcp.next.greet", {}))).code).toBe("INVALID_INPUT");
    // A tool that needs the user's input (an elicitation): the gateway has no one to ask and declares no such capability, so the
    // server refuses and the call fails at once, with the reason (not retried, not held against the server).
    const asked = await (await client.submit("mcp.next.ask", {})).result();
    expect(asked.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(asked)).toMatch(/MCP server next refused ask: .*elicitation/);

    // A bus cancel cancels the MCP request (this revision: the request's stream is closed).
    const long = await client.submit("mcp.next.countdown", { steps: 100, ms: 200 });
    await eventually(async () => (await long.get()).status.state === "TASK_STATE_WORKING");
    expect((await long.cancel()).status.state).toBe("TASK_STATE_CANCELED");

    // A tool added at run time: announced on the `subscriptions/listen` stream, offered on the bus.
    expect(textOf(await client.call("mcp.next.add-tool", { name: "Late/Comer" }))).toBe("added Late/Comer");
    await eventually(() => client.discover({ capability: "mcp.next.late_comer", online: true }).length === 1);
    expect(textOf(await client.call("mcp.next.late_comer", {}))).toBe("Late/Comer ran");
    await eventually(() => gateway.servers().next!.tools === 9);

    // Restarted on the same port: stateless, so nothing to resume; the next call reconnects (probe, list, listen) and goes through.
    const port = new URL(url).port;
    await server.kill("SIGKILL");
    await eventually(() => !gateway.servers().next!.connected, 10_000);
    expect(gateway.servers().next!.protocolVersion).toBe(MODERN_REVISION);
    const restarted = await fixture(["http", port], "mcp-modern-server");
    expect(textOf(await client.call("mcp.next.whoami", {}))).toBe(String(restarted.child.pid));
    expect(gateway.servers().next).toMatchObject({ connected: true, protocolVersion: MODERN_REVISION, circuit: "closed", tools: 8 });
    // The restarted server's own list (without the tool added to the old one) is what the bus offers.
    await eventually(() => client.discover({ capability: "mcp.next.late_comer", online: true }).length === 0);

    const records = (await eventually(async () => {
      const r = await auditRecords(client);
      return r.some((x) => x.tool === "whoami") && r.some((x) => x.task === long.id) ? r : undefined;
    }))!;
    expect(records).toContainEqual(expect.objectContaining({ caller: client.id, capability: "mcp.next.greet", server: "next", tool: "greet", outcome: "ok" }));
    expect(records).toContainEqual(expect.objectContaining({ capability: "mcp.next.forecast", outcome: "ok", task: forecast.id }));
    expect(records).toContainEqual(expect.objectContaining({ tool: "fail", outcome: "tool_error" }));
    expect(records).toContainEqual(expect.objectContaining({ tool: "ask", outcome: "mcp_error", task: asked.id }));
    expect(records).toContainEqual(expect.objectContaining({ task: long.id, outcome: "canceled" }));
    expect(JSON.stringify(records)).not.toMatch(/Ada|Lisbon/);
  }, 60_000);

  it("a 2026-07-28-only server over stdio: the revision negotiated (the probe on a sibling process), calls and progress, restarted after SIGKILL in the same revision", async () => {
    const gatewayBus = await open({ tenant: "modern-stdio", insecureAllowAll: true });
    const gateway = await start({ bus: gatewayBus, servers: { local: modernStdio }, restart: { minDelayMs: 100 } });
    expect(gateway.servers().local).toMatchObject({ transport: "stdio", connected: true, protocolVersion: MODERN_REVISION, tools: 8 });
    const client = await open({ tenant: "modern-stdio" });
    await eventually(() => client.discover({ capability: "mcp.local.greet", online: true }).length === 1);

    expect(textOf(await client.call("mcp.local.greet", { name: "Grace" }))).toBe("Hello, Grace!");
    expect((await client.call("mcp.local.revision", {})).parts).toContainEqual({ data: { revision: MODERN_REVISION } });
    const countdown = await (await client.submit("mcp.local.countdown", { steps: 3, ms: 150 })).result();
    expect(countdown.status.state).toBe("TASK_STATE_COMPLETED");
    expect(countdown.history.map(textOf)).toEqual(expect.arrayContaining(["counting: 1/3", "counting: 2/3"]));

    const pid = gateway.servers().local!.pid!;
    expect(textOf(await client.call("mcp.local.whoami", {}))).toBe(String(pid));
    process.kill(pid, "SIGKILL");
    await eventually(() => gateway.servers().local!.connected && gateway.servers().local!.pid !== pid, 20_000);
    expect(gateway.servers().local!.protocolVersion).toBe(MODERN_REVISION);
    expect(textOf(await client.call("mcp.local.whoami", {}))).toBe(String(gateway.servers().local!.pid));
  }, 60_000);

  it("Streamable HTTP server down: the circuit opens and calls fail fast; the half-open probe recovers when it is back", async () => {
    const first = await fixture(["0"]);
    const url = first.hello.url as string;
    const port = new URL(url).port;
    const gatewayBus = await open({ tenant: "breaker", insecureAllowAll: true });
    const gateway = await start({ bus: gatewayBus, servers: { web: { url, timeoutMs: 2000 } }, breaker: { failureThreshold: 2, resetTimeoutMs: 1500 }, tasks: { maxDeliver: 2, backoffMs: 50 } });
    const client = await open({ tenant: "breaker" });
    await eventually(() => client.discover({ capability: "mcp.web.whoami", online: true }).length === 1);
    expect(textOf(await client.call("mcp.web.whoami", {}))).toBe(String(first.child.pid));

    // Restarted between two calls: the old session is unknown there (HTTP 404), so the call opens a new one and goes through.
    await first.kill("SIGKILL");
    const restarted = await fixture([port]);
    expect(textOf(await client.call("mcp.web.whoami", {}))).toBe(String(restarted.child.pid));

    await restarted.kill("SIGKILL");
    const refused = await failure(client.call("mcp.web.whoami", {}));
    expect([refused.code, refused.message]).toEqual(["UNAVAILABLE", expect.stringMatching(/^MCP server web \(http\) is unreachable: .*ECONNREFUSED/)]);
    await failure(client.call("mcp.web.whoami", {}));
    expect(gateway.servers().web!.circuit).toBe("open");

    const t0 = Date.now();
    const fast = await failure(client.call("mcp.web.whoami", {}));
    expect(Date.now() - t0).toBeLessThan(500);
    expect([fast.code, fast.message]).toEqual(["UNAVAILABLE", expect.stringMatching(/MCP server web is failing: circuit open/)]);
    const task = await (await client.submit("mcp.web.whoami", {})).result({ timeout: 10_000 });
    expect(task.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(task)).toMatch(/gave up after 2 attempts: UNAVAILABLE: MCP server web is failing: circuit open/);

    // Back on the same port: after the reset timeout one probe call goes through, reconnects, and closes the circuit.
    const second = await fixture([port]);
    await eventually(() => gateway.servers().web!.circuit === "halfOpen", 5000);
    expect(textOf(await client.call("mcp.web.whoami", {}))).toBe(String(second.child.pid));
    expect(gateway.servers().web).toMatchObject({ circuit: "closed", connected: true });

    const records = await auditRecords(client);
    expect(records.map((r) => r.outcome)).toEqual(expect.arrayContaining(["ok", "unavailable", "circuit_open"]));
  }, 60_000);

  it("a server that is down at start is connected in the background and its tools registered then", async () => {
    const probe = await fixture(["0"]);
    const url = probe.hello.url as string;
    await probe.kill("SIGKILL");
    const gatewayBus = await open({ tenant: "late", insecureAllowAll: true });
    const gateway = await start({ bus: gatewayBus, servers: { web: { url } }, restart: { minDelayMs: 100, maxDelayMs: 300 } });
    expect(gateway.agent).toBeUndefined();
    expect(gateway.servers().web).toMatchObject({ connected: false, tools: 0 });
    await fixture([new URL(url).port]);
    const client = await open({ tenant: "late" });
    await eventually(() => client.discover({ capability: "mcp.web.shout", online: true }).length === 1, 10_000);
    expect(textOf(await client.call("mcp.web.shout", { text: "late" }))).toBe("LATE");
  }, 60_000);

  it("end to end: @a2a-js/sdk client → A2A bridge → bus → MCP gateway → MCP server tool", async () => {
    const gatewayBus = await open({ tenant: "e2e", insecureAllowAll: true });
    await start({ bus: gatewayBus, servers: { everything } });
    const bridgeBus = await open({ tenant: "e2e" });
    await eventually(() => bridgeBus.discover({ name: "mcp-gateway", online: true }).length === 1);
    const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    try {
      await app.register(a2aBridge, { bus: bridgeBus, open: true, push: false });
      const base = await app.listen({ port: 0, host: "127.0.0.1" });
      const a2a = await new ClientFactory().createFromUrl(`${base}/a2a/mcp-gateway/.well-known/agent-card.json`, "");
      const message = SdkMessageCodec.fromJSON({ messageId: "e2e-1", role: "ROLE_USER", parts: [{ data: { a: 20, b: 22 } }], metadata: { skill: "mcp.everything.get-sum" } });
      const result = (await a2a.sendMessage({ tenant: "", message, configuration: undefined, metadata: undefined })) as SdkTask;
      expect(result.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
      expect(result.artifacts.flatMap((a) => a.parts.map((p) => (p.content?.$case === "text" ? p.content.value : ""))).join("")).toBe("The sum of 20 and 22 is 42.");
    } finally {
      await app.close();
    }
  }, 60_000);

  it("configuration and tool names: validated with clear reasons; names mapped onto capabilities or rejected", async () => {
    expect(() => parseMcpGatewayConfig({ servers: { Bad: { command: "x" } } })).toThrow(/invalid MCP gateway configuration: .*property name must be valid|must match pattern/);
    expect(() => parseMcpGatewayConfig({ servers: { a: { args: ["x"] } } })).toThrow(/must have required property 'url'/);
    expect(() => parseMcpGatewayConfig({ servers: { a: { url: "ftp://x" } } })).toThrow(/must match pattern "\^https\?:\/\/"/);
    expect(() => parseMcpGatewayConfig({ servers: { a: { command: "x", headers: {} } } })).toThrow(/must NOT have additional properties/);
    expect(() => parseMcpGatewayConfig({ servers: {} })).toThrow(/must NOT have fewer than 1 properties/);
    expect(parseMcpGatewayConfig({ servers: { a: { command: "x", env: { K: "v" } }, b: { url: "https://x/mcp", headers: { h: "v" } } } }).servers.b).toEqual({ url: "https://x/mcp", headers: { h: "v" } });
    // ${NAME} comes from the environment (secrets stay out of the file); $${ is a literal ${; an unset variable is named.
    const env = { TOKEN: "t0k", BIN: "/usr/bin/tool" };
    expect(parseMcpGatewayConfig({ servers: { s: { url: "https://x/mcp", headers: { authorization: "Bearer ${TOKEN}" } }, c: { command: "${BIN}", args: ["--k=$${LIT}"], env: { K: "${TOKEN}" } } } }, env).servers).toEqual({
      s: { url: "https://x/mcp", headers: { authorization: "Bearer t0k" } },
      c: { command: "/usr/bin/tool", args: ["--k=${LIT}"], env: { K: "t0k" } },
    });
    expect(() => parseMcpGatewayConfig({ servers: { s: { url: "https://x/${NOPE}" } } }, env)).toThrow(/servers\.s\.url uses \$\{NOPE\}, which is not set/);
    const bus = await open({ tenant: "cfg" });
    await expect(startMcpGateway({ bus, servers: { "a.b": { command: "x" } } })).rejects.toThrow(AgentBusError);

    expect(capabilityOf("s", "get-sum")).toBe("mcp.s.get-sum");
    expect(capabilityOf("s", "longRunningOperation")).toBe("mcp.s.longrunningoperation");
    expect(capabilityOf("s", "github.search/issues")).toBe("mcp.s.github.search_issues");
    expect(capabilityOf("s", "a..b")).toBeUndefined();
    const tool = (name: string, inputSchema: Record<string, unknown> = { type: "object" }) => ({ name, inputSchema: inputSchema as { type: "object" } });
    const { mapped, rejected } = mapTools("s", [tool("Echo"), tool("echo"), tool(".hidden"), tool("ok", { type: "object", $schema: "https://json-schema.org/draft/2020-12/schema" }), tool("broken", { type: "object", properties: { a: { type: "nonsense" } } })]);
    expect(mapped.map((m) => [m.capability, m.tool])).toEqual([["mcp.s.ok", "ok"]]);
    expect(mapped[0]!.inputSchema).toEqual({ type: "object" });
    expect(rejected.map((r) => r.tool).sort()).toEqual([".hidden", "Echo", "broken", "echo"]);
    expect(rejected.find((r) => r.tool === "Echo")!.reason).toMatch(/all map to capability mcp\.s\.echo/);
    expect(rejected.find((r) => r.tool === "broken")!.reason).toMatch(/input schema does not compile/);
  });
});
