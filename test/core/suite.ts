/**
 * The core bus suite. It runs against a single server (single.test.ts) and a
 * 3-node JetStream cluster (cluster.test.ts): same tests, same assertions.
 */
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { jetstreamManager } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import { connect as natsConnect } from "@nats-io/transport-node";
import {
  AgentBusError,
  attach,
  Envelopes,
  Header,
  Identity,
  createLogger,
  dataOf,
  textOf,
  traceIdOf,
  type Bus,
  type ConnectOptions,
} from "../../core/index.js";
import { asAdmin, eventually, grant, revokeAsAdmin, unrevokeAsAdmin, useBuses } from "../helpers/bus.js";
import { startFixture } from "../helpers/process.js";

const enc = new TextEncoder();
let tenants = 0;

/** Expects `p` to reject with an AgentBusError of `code`. */
async function rejectsWith(p: Promise<unknown>, code: string): Promise<AgentBusError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(AgentBusError);
  expect((err as AgentBusError).code).toBe(code);
  return err as AgentBusError;
}

export function busSuite(label: string, servers: () => string[], replicas: number): void {
  describe(`core bus (${label})`, () => {
    const open = useBuses(servers, { replicas });
    /** A fresh tenant per test keeps tests independent on one server. */
    const tenant = () => `t${process.pid}-${++tenants}`;

    /** An agent bus plus a caller granted every capability. */
    async function pair(o: Partial<ConnectOptions> = {}) {
      const t = tenant();
      const agentBus = await open({ tenant: t, ...o });
      const caller = await open({ tenant: t });
      await grant(agentBus, "caller", { source: caller.id, target: "*", capabilities: [">"] }, caller);
      return { t, agentBus, caller };
    }

    it("processes that set up one tenant at the same moment all succeed (buckets, streams, sessions)", async () => {
      const t = tenant();
      let logged = "";
      const sink = new Writable({ write: (chunk, _e, cb) => ((logged += String(chunk)), cb()) });
      const buses = await Promise.all(Array.from({ length: 5 }, (_, i) => open({ tenant: t, ...(i === 0 && { logger: createLogger({ level: "warn" }, sink) }) })));
      await Promise.all(buses.map((b) => b.ensureTasks()));
      const sessions = await Promise.all(buses.map((b) => b.session<{ n?: number }>("ctx")));
      await Promise.all(sessions.map((s) => s.update((v) => ({ n: (v?.n ?? 0) + 1 }))));
      const { replicatedCas } = buses[0]!.server;
      // nats-server#4320: before 2.9.21 an R3 bucket can accept two writes
      // expecting the same revision; the bus says so at connect.
      expect(logged.includes("nats-server#4320")).toBe(replicas > 1 && !replicatedCas);
      if (replicas === 1 || replicatedCas) expect((await sessions[0]!.get())!.value.n).toBe(5);
    });

    it("round trip: text in, text out; data in, data out", async () => {
      const { agentBus, caller } = await pair();
      await agentBus.agent(
        { name: "echo", skills: [{ id: "echo" }, { id: "math.add" }] },
        {
          echo: (ctx) => `echo: ${ctx.text}`,
          "math.add": (ctx) => {
            const { a, b } = ctx.input as { a: number; b: number };
            return { sum: a + b };
          },
        },
      );
      expect(textOf(await caller.call("echo", "hi"))).toBe("echo: hi");
      expect(dataOf(await caller.call("math.add", { a: 2, b: 3 }))).toEqual({ sum: 5 });
    });

    it("spreads load over 3 replicas of one capability", async () => {
      const t = tenant();
      const seed = Identity.generate().exportSeed();
      const replicasUp = [];
      for (const n of [1, 2, 3]) {
        const b = await open({ tenant: t, identity: Identity.fromSeed(seed), insecureAllowAll: true });
        replicasUp.push(b.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: () => `replica ${n}` }));
      }
      await Promise.all(replicasUp);
      const caller = await open({ tenant: t });
      const counts = new Map<string, number>();
      for (let i = 0; i < 90; i++) {
        const who = textOf(await caller.call("echo", "x"));
        counts.set(who, (counts.get(who) ?? 0) + 1);
      }
      expect([...counts.keys()].sort()).toEqual(["replica 1", "replica 2", "replica 3"]);
      for (const c of counts.values()) expect(c).toBeGreaterThan(5);
    });

    it("registers agents as NATS micro services, one endpoint per capability", async () => {
      const { agentBus } = await pair();
      const agent = await agentBus.agent({ name: "svc-demo", version: "2.1.0", skills: [{ id: "echo" }, { id: "a.b" }] }, { echo: () => "", "a.b": () => "" });
      const client = new Svcm(agentBus.nc).client();
      const infos = [];
      for await (const info of await client.info("svc-demo")) infos.push(info);
      expect(infos).toHaveLength(1);
      expect(infos[0]!.version).toBe("2.1.0");
      expect(infos[0]!.metadata?.agent_id).toBe(agentBus.id);
      const subjects = infos[0]!.endpoints.map((e) => e.subject).sort();
      const p = `mesh.${agentBus.subjects.tenant}`;
      expect(subjects).toEqual([`${p}.agent.${agentBus.id}.call`, `${p}.agent.${agentBus.id}.call.${agent.instance}`, `${p}.cap.a.b`, `${p}.cap.echo`].sort());
    });

    it("calls one agent directly with target", async () => {
      const { t, agentBus, caller } = await pair();
      const other = await open({ tenant: t, insecureAllowAll: true });
      await agentBus.agent({ name: "a", skills: [{ id: "echo" }] }, { echo: () => "first" });
      await other.agent({ name: "b", skills: [{ id: "echo" }] }, { echo: () => "second" });
      for (let i = 0; i < 5; i++) expect(textOf(await caller.call("echo", "x", { target: other.id }))).toBe("second");
      await rejectsWith(caller.call("nope", "x", { target: other.id }), "INVALID_INPUT");
    });

    it("answers NO_RESPONDERS and TIMEOUT with their codes", async () => {
      const { agentBus, caller } = await pair();
      await rejectsWith(caller.call("nobody.here", "x"), "NO_RESPONDERS");
      await agentBus.agent({ name: "slow", skills: [{ id: "slow" }] }, { slow: () => new Promise((r) => setTimeout(() => r("late"), 1500)) });
      await rejectsWith(caller.call("slow", "x", { timeout: 200 }), "TIMEOUT");
      const ac = new AbortController();
      const p = caller.call("slow", "x", { signal: ac.signal });
      ac.abort();
      await rejectsWith(p, "CANCELLED");
    });

    it("discovers agents from the local cache and sees a SIGKILLed agent expire", async () => {
      const t = tenant();
      const watcher = await open({ tenant: t });
      const events: string[] = [];
      watcher.onAgent((e) => events.push(`${e.type}:${e.agent.name}`));
      const proc = await startFixture("echo-agent", [servers().join(","), t, "3000", String(replicas)]);
      const id = proc.hello.id as string;
      await eventually(() => watcher.discover({ capability: "echo", online: true }).some((a) => a.id === id));
      const [info] = watcher.discover({ name: "proc-echo" });
      expect(info).toMatchObject({ id, online: true, instances: 1, capabilities: ["echo"], tags: ["demo"] });
      expect(watcher.discover({ tag: "demo", online: true })).toHaveLength(1);
      expect(watcher.discover({ capability: "other" })).toHaveLength(0);
      expect(events).toContain("up:proc-echo");
      // The fixture runs with insecureAllowAll, so our call goes through.
      expect(textOf(await watcher.call("echo", "ping"))).toBe("ping");

      await proc.kill("SIGKILL");
      const killedAt = Date.now();
      await eventually(() => watcher.discover({ capability: "echo", online: true }).length === 0, 10_000);
      expect(Date.now() - killedAt).toBeLessThan(3000 + 2500);
      await eventually(() => events.includes("down:proc-echo"), 2000);
      // Registered but offline: still listed for online:false.
      expect(watcher.discover({ online: false }).map((a) => a.id)).toContain(id);
    });

    it("a graceful stop withdraws presence at once", async () => {
      const t = tenant();
      const watcher = await open({ tenant: t });
      const a = await open({ tenant: t });
      const agent = await a.agent({ name: "brief", skills: [{ id: "echo" }] }, { echo: () => "" });
      await eventually(() => watcher.discover({ name: "brief", online: true }).length === 1);
      await agent.stop();
      await eventually(() => watcher.discover({ name: "brief", online: true }).length === 0, 1500);
    });

    it("ACL: default deny, allow by rule and group, hot reload without restart, denials audited", async () => {
      const t = tenant();
      const agentBus = await open({ tenant: t });
      const caller = await open({ tenant: t });
      let calls = 0;
      await agentBus.agent({ name: "guarded", skills: [{ id: "secret.read" }, { id: "public" }] }, {
        "secret.read": () => (calls++, "secret"),
        public: () => (calls++, "public"),
      });
      // Named nowhere: unknown.
      await rejectsWith(caller.call("public", "x"), "UNKNOWN_SENDER");
      // Named in a group with no grant: denied.
      await asAdmin(agentBus, (admin) => admin.acl.putGroup("callers", [caller.id]));
      expect(agentBus.acl.names(caller.id)).toBe(true);
      await rejectsWith(caller.call("public", "x"), "DENIED");
      // Granted `public` only.
      await grant(agentBus, "callers-public", { source: "group:callers", target: agentBus.id, capabilities: ["public"] });
      expect(agentBus.acl.allows(caller.id, agentBus.id, "public")).toBe(true);
      expect(textOf(await caller.call("public", "x"))).toBe("public");
      await rejectsWith(caller.call("secret.read", "x"), "DENIED");
      // Wildcards: secret.* granted, then the rule is removed again.
      await grant(agentBus, "callers-secret", { source: "group:callers", target: "*", capabilities: ["secret.*"] });
      expect(agentBus.acl.allows(caller.id, agentBus.id, "secret.read")).toBe(true);
      expect(textOf(await caller.call("secret.read", "x"))).toBe("secret");
      await asAdmin(agentBus, (admin) => admin.acl.deleteRule("callers-secret"));
      expect(agentBus.acl.allows(caller.id, agentBus.id, "secret.read")).toBe(false);
      await rejectsWith(caller.call("secret.read", "x"), "DENIED");
      expect(calls).toBe(2);

      const jsm = await jetstreamManager(agentBus.nc);
      const audit = await eventually(() => jsm.streams.getMessage(agentBus.subjects.stream("AUDIT"), { last_by_subj: agentBus.subjects.audit("denied") }));
      expect(audit!.json<{ code: string; from: string; agent: string }>()).toMatchObject({ code: "DENIED", from: caller.id, agent: agentBus.id });
    });

    it("error replies are readable by a raw NATS client: Mesh-Error-Code header and {code, message}", async () => {
      const { agentBus, caller } = await pair();
      await agentBus.agent({ name: "x", skills: [{ id: "echo" }] }, { echo: () => "" });
      const reply = await caller.nc.request(agentBus.subjects.cap("echo"), enc.encode("{}"), { timeout: 2000 });
      expect(reply.headers?.get(Header.error)).toBe("UNSIGNED");
      expect(reply.json()).toMatchObject({ code: "UNSIGNED" });
      expect(reply.headers?.get("Nats-Service-Error")).toBe("UNSIGNED");
    });

    describe("refusals before any handler runs", () => {
      async function guarded(o: Partial<ConnectOptions> = {}) {
        const p = await pair(o);
        let calls = 0;
        await p.agentBus.agent(
          { name: "guarded", skills: [{ id: "echo" }, { id: "typed", inputSchema: { type: "object", required: ["n"], properties: { n: { type: "number" } } } }] },
          { echo: (ctx) => (calls++, ctx.text), typed: () => (calls++, "ok") },
        );
        const subject = p.agentBus.subjects.cap("echo");
        const body = enc.encode(JSON.stringify({ messageId: "m1", role: "ROLE_USER", parts: [{ text: "hi" }] }));
        /** Sends a hand-built message and returns the error code of the reply. */
        const raw = async (headers: ReturnType<Envelopes["seal"]>, data = body, subj = subject) => {
          const reply = await p.caller.nc.request(subj, data, { headers, timeout: 2000 });
          return reply.headers?.get(Header.error) || "OK";
        };
        return { ...p, calls: () => calls, subject, body, raw };
      }

      it("tampered body (signature and MAC), wrong key, unsigned", async () => {
        const g = await guarded();
        const own = g.caller.envelopes;
        expect(await g.raw(own.seal(g.subject, g.body))).toBe("OK");
        expect(g.calls()).toBe(1);
        const tampered = enc.encode(new TextDecoder().decode(g.body).replace("hi", "ho"));
        expect(await g.raw(own.seal(g.subject, g.body), tampered)).toBe("BAD_SIGNATURE");
        expect(await g.raw(own.seal(g.subject, g.body, {}, [g.agentBus.id]), tampered)).toBe("BAD_SIGNATURE");
        // Raising the depth or dropping the task id breaks the signature too.
        const h = own.seal(g.subject, g.body, { depth: 1 });
        h.set(Header.depth, "0");
        expect(await g.raw(h)).toBe("BAD_SIGNATURE");
        // Signed by another key while claiming to be the caller.
        const forged = new Envelopes(Identity.generate()).seal(g.subject, g.body);
        forged.set(Header.from, g.caller.id);
        expect(await g.raw(forged)).toBe("BAD_SIGNATURE");
        // MAC addressed to someone else only.
        expect(await g.raw(own.seal(g.subject, g.body, {}, [Identity.generate().id]))).toBe("UNSIGNED");
        expect(g.calls()).toBe(1);
      });

      it("stale and future timestamps, replayed id", async () => {
        const g = await guarded();
        const past = new Envelopes(g.caller.identity, { clock: () => Date.now() - 61_000 });
        const future = new Envelopes(g.caller.identity, { clock: () => Date.now() + 61_000 });
        expect(await g.raw(past.seal(g.subject, g.body))).toBe("EXPIRED");
        expect(await g.raw(future.seal(g.subject, g.body))).toBe("EXPIRED");
        const once = g.caller.envelopes.seal(g.subject, g.body, {}, [g.agentBus.id]);
        expect(await g.raw(once)).toBe("OK");
        expect(await g.raw(once)).toBe("REPLAYED");
        expect(g.calls()).toBe(1);
      });

      it("unknown sender, revoked key", async () => {
        const g = await guarded();
        const stranger = new Envelopes(Identity.generate());
        expect(await g.raw(stranger.seal(g.subject, g.body))).toBe("UNKNOWN_SENDER");
        await revokeAsAdmin(g.agentBus, g.caller.id, "key leaked");
        expect(g.agentBus.isRevoked(g.caller.id)).toBe(true);
        await rejectsWith(g.caller.call("echo", "hi"), "REVOKED");
        expect(g.calls()).toBe(0);
        const jsm = await jetstreamManager(g.agentBus.nc);
        const rec = await jsm.streams.getMessage(g.agentBus.subjects.stream("AUDIT"), { last_by_subj: g.agentBus.subjects.audit("revoked") });
        expect(rec!.json()).toMatchObject({ kind: "revoked", code: "REVOKED", from: g.caller.id });
        await unrevokeAsAdmin(g.agentBus, g.caller.id);
        expect(g.agentBus.isRevoked(g.caller.id)).toBe(false);
        expect(textOf(await g.caller.call("echo", "back"))).toBe("back");
      });

      it("oversize payload and schema-invalid input", async () => {
        const g = await guarded({ maxPayload: 2048 });
        await rejectsWith(g.caller.call("echo", "x".repeat(4096)), "PAYLOAD_TOO_LARGE");
        const err = await rejectsWith(g.caller.call("typed", { n: "not a number" }), "INVALID_INPUT");
        expect(err.message).toMatch(/must be number/);
        await rejectsWith(g.caller.call("typed", "plain text"), "INVALID_INPUT");
        expect(g.calls()).toBe(0);
        expect(textOf(await g.caller.call("typed", { n: 1 }))).toBe("ok");
      });

      it("call depth past the limit", async () => {
        const g = await guarded({ maxDepth: 3 });
        const deep = g.caller.envelopes.seal(g.subject, g.body, { depth: 4 });
        expect(await g.raw(deep)).toBe("DEPTH_EXCEEDED");
        expect(g.calls()).toBe(0);
      });
    });

    it("agent-to-agent calls carry parent, depth and trace; a loop stops at the depth limit", async () => {
      const t = tenant();
      const a = await open({ tenant: t, insecureAllowAll: true, maxDepth: 3 });
      const b = await open({ tenant: t, insecureAllowAll: true, maxDepth: 3 });
      const seen: Array<{ depth: number; parent?: string; trace?: string }> = [];
      await b.agent({ name: "inner", skills: [{ id: "inner" }] }, {
        inner: (ctx) => {
          seen.push({ depth: ctx.envelope.depth, parent: ctx.envelope.parent, trace: traceIdOf(ctx.envelope.trace?.traceparent) });
          return "inner done";
        },
      });
      await a.agent({ name: "outer", skills: [{ id: "outer" }, { id: "loop" }] }, {
        outer: async (ctx) => textOf(await ctx.call("inner", "go")),
        loop: async (ctx) => textOf(await ctx.call("loop", "again")),
      });
      const caller = await open({ tenant: t });
      const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
      expect(textOf(await caller.call("outer", "x", { trace: { traceparent } }))).toBe("inner done");
      expect(seen).toEqual([{ depth: 1, parent: expect.any(String), trace: "4bf92f3577b34da6a3ce929d0e0e4736" }]);
      await rejectsWith(caller.call("loop", "x"), "DEPTH_EXCEEDED");
    });

    it("attach() runs a bus on the caller's own connection; close() stops the bus and leaves the connection open", async () => {
      const t = tenant();
      const caller = await open({ tenant: t }); // sets the tenant up as the other tests' buses do
      const identity = Identity.generate();
      const nc = await natsConnect({ servers: servers(), inboxPrefix: `_INBOX.${identity.id}` });
      try {
        const agentBus = await attach(nc, { tenant: t, identity, insecureAllowAll: true, logger: createLogger({ level: "silent" }) });
        expect(agentBus.id).toBe(identity.id);
        await agentBus.agent({ name: "attached", skills: [{ id: "attached" }] }, { attached: (ctx) => `on my connection: ${ctx.text}` });
        await grant(agentBus, "caller", { source: caller.id, target: "*", capabilities: [">"] }, caller);
        await eventually(() => caller.discover({ capability: "attached", online: true }).length === 1);
        expect(textOf(await caller.call("attached", "hi"))).toBe("on my connection: hi");
        await agentBus.close();
        expect(nc.isClosed()).toBe(false);
        await rejectsWith(caller.call("attached", "x", { timeout: 1000 }), "NO_RESPONDERS");
        // The connection is still the caller's to use.
        await nc.flush();
      } finally {
        await nc.close();
      }
    });

    it("close() drains: a call in flight still gets its reply", async () => {
      const { agentBus, caller } = await pair();
      let started!: () => void;
      const running = new Promise<void>((r) => (started = r));
      await agentBus.agent({ name: "slow", skills: [{ id: "echo" }] }, {
        echo: async (ctx) => {
          started();
          await new Promise((r) => setTimeout(r, 700));
          return `done ${ctx.text}`;
        },
      });
      const reply = caller.call("echo", "late");
      await running;
      await agentBus.close();
      expect(textOf(await reply)).toBe("done late");
      await rejectsWith(caller.call("echo", "x", { timeout: 1000 }), "NO_RESPONDERS");
    });
  });
}

export type { Bus };
