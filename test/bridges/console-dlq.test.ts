/**
 * The console's dead-letter and audit routes (`/v1/dead-letters`,
 * `/v1/audit`) on the monitor plugin, against a real nats-server.
 */
import Fastify from "fastify";
import { beforeAll, describe, expect, it } from "vitest";
import { AgentBusError, textOf, type Bus, type Task } from "../../core/index.js";
import { hashApiKey } from "../../bridges/a2a/index.js";
import { monitor } from "../../bridges/monitor/index.js";
import { eventually, grant, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { useMonitor } from "../helpers/monitor.js";

type View = { sequence: number; capability: string; taskId?: string; reason: string; deliveries: number; time: string; input: string; submitter?: string };
type AuditRow = { sequence: number; time: string; kind: string; from?: string; code?: string; message?: string; verified: boolean; record: { [k: string]: unknown } };

const artifactText = (t: Task) => t.artifacts.flatMap((a) => a.parts.map((p) => p.text ?? "")).join("");

/** A handler that fails for good (MISUSE: dead-lettered at once) on its first `failures` runs, then answers. */
function failing(failures: number) {
  let runs = 0;
  return (ctx: { text: string }) => {
    if (++runs <= failures) throw new AgentBusError("MISUSE", `broken on run ${runs}`);
    return `done: ${ctx.text}`;
  };
}

describe("console: dead letters and audit", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { tenant: "con", drainTimeoutMs: 300 });
  const monitored = useMonitor(() => nats.server.url, "con");
  let baseUrl: string;
  let monitorBus: Bus;
  beforeAll(() => void ({ baseUrl, bus: monitorBus } = monitored()));

  const get = async (path: string, url = baseUrl, headers: { [k: string]: string } = {}) => {
    const res = await fetch(`${url}${path}`, { headers });
    return { status: res.status, body: (await res.json()) as { [k: string]: unknown } };
  };
  const listed = async (query = "", url = baseUrl, headers: { [k: string]: string } = {}) => {
    const { status, body } = await get(`/v1/dead-letters${query}`, url, headers);
    expect(status).toBe(200);
    return body.deadLetters as View[];
  };

  it("lists a dead letter with its reason and input preview; requeued, it runs again and is gone; discarded, it is gone; unknown is 404", async () => {
    const agent = await open({ insecureAllowAll: true });
    await agent.agent({ name: "fragile", skills: [{ id: "fragile" }, { id: "hopeless" }] }, { fragile: failing(1), hopeless: failing(99) });
    const caller = await open({ insecureAllowAll: true });
    const before = Date.now();
    const dead = await (await caller.submit("fragile", "please work")).result({ timeout: 10_000 });
    expect(dead.status.state).toBe("TASK_STATE_FAILED");

    const [entry] = await eventually(async () => {
      const list = await listed("?capability=fragile");
      return list.length === 1 ? list : undefined;
    }) as View[];
    expect(Object.keys(entry!).sort()).toEqual(["capability", "deliveries", "input", "reason", "sequence", "submitter", "taskId", "time"]);
    expect(entry).toMatchObject({ capability: "fragile", taskId: dead.id, deliveries: 1, input: "please work", submitter: caller.id });
    expect(entry!.reason).toMatch(/^MISUSE: broken on run 1/);
    expect(new Date(entry!.time).toISOString()).toBe(entry!.time);
    expect(Date.parse(entry!.time)).toBeGreaterThanOrEqual(before - 1000);
    expect(await listed("?capability=nothing")).toEqual([]);
    const bad = await get("/v1/dead-letters?capability=Not%20One");
    expect([bad.status, bad.body.code]).toEqual([400, "INVALID_INPUT"]);

    const res = await fetch(`${baseUrl}/v1/dead-letters/${entry!.sequence}/requeue`, { method: "POST" });
    expect(res.status).toBe(201);
    const { task } = (await res.json()) as { task: Task };
    expect(task.id).not.toBe(dead.id);
    expect(task.metadata).toMatchObject({ capability: "fragile", retryOf: dead.id, submitter: monitorBus.id });
    const done = await (await monitorBus.taskHandle(task.id)).result({ timeout: 10_000 });
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(done)).toBe("done: please work");
    expect(textOf(done.history[0]!)).toBe("please work");
    expect((await listed()).map((d) => d.sequence)).not.toContain(entry!.sequence);
    const again = await fetch(`${baseUrl}/v1/dead-letters/${entry!.sequence}/requeue`, { method: "POST" });
    expect([again.status, await again.json()]).toEqual([404, { code: "NOT_FOUND", message: `no dead letter ${entry!.sequence}` }]);

    // A long input is previewed in 200 characters; discarded, the dead letter is gone.
    const long = await (await caller.submit("hopeless", `${"é".repeat(150)}${"x".repeat(150)}`)).result({ timeout: 10_000 });
    const [hopeless] = await eventually(async () => {
      const list = await listed("?capability=hopeless");
      return list.length === 1 ? list : undefined;
    }) as View[];
    expect(hopeless!.taskId).toBe(long.id);
    expect(hopeless!.input).toHaveLength(200);
    expect(hopeless!.input).toBe(`${"é".repeat(150)}${"x".repeat(49)}…`);
    const removed = await fetch(`${baseUrl}/v1/dead-letters/${hopeless!.sequence}`, { method: "DELETE" });
    expect(removed.status).toBe(204);
    expect(await listed("?capability=hopeless")).toEqual([]);
    const twice = await fetch(`${baseUrl}/v1/dead-letters/${hopeless!.sequence}`, { method: "DELETE" });
    expect([twice.status, ((await twice.json()) as { code: string }).code]).toEqual([404, "NOT_FOUND"]);
    for (const [method, path] of [["DELETE", "/v1/dead-letters/abc"], ["DELETE", "/v1/dead-letters/0"], ["POST", "/v1/dead-letters/-3/requeue"], ["POST", "/v1/dead-letters/1.5/requeue"]] as const) {
      const r = await fetch(`${baseUrl}${path}`, { method });
      expect([r.status, ((await r.json()) as { code: string }).code], path).toEqual([400, "INVALID_INPUT"]);
    }
  });

  it("an encrypted task's dead letter cannot be requeued by an identity it is not encrypted for: 409 NOT_RECIPIENT", async () => {
    const agent = await open({ insecureAllowAll: true });
    await agent.agent({ name: "sealed", skills: [{ id: "sealed" }] }, { sealed: failing(99) });
    const caller = await open({ insecureAllowAll: true });
    await eventually(() => caller.discover({ capability: "sealed" }).length === 1);
    const dead = await (await caller.submit("sealed", "top secret", { encrypt: true })).result({ timeout: 10_000 });
    const [entry] = await eventually(async () => {
      const list = await listed("?capability=sealed");
      return list.length === 1 ? list : undefined;
    }) as View[];
    expect(entry).toMatchObject({ taskId: dead.id, input: "" });
    const res = await fetch(`${baseUrl}/v1/dead-letters/${entry!.sequence}/requeue`, { method: "POST" });
    expect(res.status).toBe(409);
    expect(((await res.json()) as { code: string }).code).toBe("NOT_RECIPIENT");
    expect(await listed("?capability=sealed")).toHaveLength(1);
  });

  it("behind API keys, each caller sees, requeues and removes only the dead letters of its own tasks", async () => {
    const agent = await open({ insecureAllowAll: true });
    await agent.agent({ name: "shared", skills: [{ id: "shared" }] }, { shared: failing(2) });
    const front = await open({ insecureAllowAll: true });
    const keyed = Fastify({ forceCloseConnections: true });
    await keyed.register(monitor, {
      bus: front,
      apiKeys: [{ name: "alice", sha256: hashApiKey("key-alice"), bus: front }, { name: "bob", sha256: hashApiKey("key-bob"), bus: front }],
    });
    const url = await keyed.listen({ port: 0, host: "127.0.0.1" });
    const alice = { "X-API-Key": "key-alice" };
    const bob = { "X-API-Key": "key-bob" };
    try {
      const ofAlice = await (await front.submit("shared", "alice's", { caller: "alice" })).result({ timeout: 10_000 });
      const ofBob = await (await front.submit("shared", "bob's", { caller: "bob" })).result({ timeout: 10_000 });
      const [a] = await eventually(async () => {
        const list = await listed("", url, alice);
        return list.length === 1 ? list : undefined;
      }) as View[];
      expect(a).toMatchObject({ taskId: ofAlice.id, input: "alice's" });
      const [b] = await listed("", url, bob);
      expect(b).toMatchObject({ taskId: ofBob.id, input: "bob's" });
      expect((await get("/v1/dead-letters", url)).status).toBe(401);

      const stolen = await fetch(`${url}/v1/dead-letters/${b!.sequence}`, { method: "DELETE", headers: alice });
      expect([stolen.status, ((await stolen.json()) as { code: string }).code]).toEqual([404, "NOT_FOUND"]);
      const taken = await fetch(`${url}/v1/dead-letters/${b!.sequence}/requeue`, { method: "POST", headers: alice });
      expect(taken.status).toBe(404);
      expect(await listed("", url, bob)).toHaveLength(1);

      const res = await fetch(`${url}/v1/dead-letters/${a!.sequence}/requeue`, { method: "POST", headers: alice });
      expect(res.status).toBe(201);
      const { task } = (await res.json()) as { task: Task };
      expect(task.metadata).toMatchObject({ caller: "alice", retryOf: ofAlice.id });
      expect((await (await front.taskHandle(task.id, { caller: "alice" })).result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_COMPLETED");
      expect(await listed("", url, alice)).toEqual([]);
      expect((await fetch(`${url}/v1/dead-letters/${b!.sequence}`, { method: "DELETE", headers: bob })).status).toBe(204);
    } finally {
      await keyed.close();
    }
  });

  it("GET /v1/audit: a refused call's record with its code, newest first, filtered by kind and limited", async () => {
    const guarded = await open();
    await guarded.agent({ name: "guarded", skills: [{ id: "guarded" }] }, { guarded: () => "secret" });
    const stranger = await open();
    await eventually(() => stranger.discover({ capability: "guarded" }).length === 1);
    for (const attempt of ["one", "two"]) {
      await expect(stranger.call("guarded", attempt)).rejects.toMatchObject({ code: expect.stringMatching(/^(DENIED|UNKNOWN_SENDER)$/) });
    }
    // A caller the ACL names but does not grant this capability is DENIED.
    await grant(guarded, "stranger-known", { source: stranger.id, target: guarded.id, capabilities: ["other"] });
    await expect(stranger.call("guarded", "three")).rejects.toMatchObject({ code: "DENIED" });

    const records = await eventually(async () => {
      const { status, body } = await get("/v1/audit?kind=denied&limit=10");
      expect(status).toBe(200);
      const mine = (body.records as AuditRow[]).filter((r) => r.from === stranger.id);
      return mine.length >= 1 ? (body.records as AuditRow[]) : undefined;
    }) as AuditRow[];
    const denied = records.find((r) => r.from === stranger.id)!;
    expect(denied).toMatchObject({ kind: "denied", code: "DENIED", from: stranger.id, verified: true });
    expect(denied.message).toMatch(new RegExp(`${stranger.id} may not invoke guarded`));
    expect(denied.record).toMatchObject({ kind: "denied", code: "DENIED", by: guarded.id, from: stranger.id });
    expect(new Date(denied.time).toISOString()).toBe(denied.time);
    expect(records.every((r) => r.kind === "denied")).toBe(true);

    // Every kind, newest first; the limit holds.
    const all = (await get("/v1/audit")).body.records as AuditRow[];
    expect(all.length).toBeGreaterThanOrEqual(2);
    expect(all.map((r) => r.sequence)).toEqual([...all.map((r) => r.sequence)].sort((x, y) => y - x));
    expect(all.some((r) => r.kind === "unknown_sender" && r.from === stranger.id)).toBe(true);
    const one = (await get("/v1/audit?limit=1")).body.records as AuditRow[];
    expect(one.map((r) => r.sequence)).toEqual([all[0]!.sequence]);
    for (const query of ["limit=0", "limit=1001", "limit=x", "kind=Not.A.Kind"]) {
      const { status, body } = await get(`/v1/audit?${query}`);
      expect([status, body.code], query).toEqual([400, "INVALID_INPUT"]);
    }
  });
});
