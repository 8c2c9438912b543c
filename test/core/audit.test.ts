/**
 * The audit stream: bounded, one record per refusal (floods summarized),
 * and a reader that tells genuine records from forged ones.
 */
import { describe, expect, it } from "vitest";
import { connect as natsConnect } from "@nats-io/transport-node";
import { DiscardPolicy, jetstreamManager } from "@nats-io/jetstream";
import { AgentBusError, Envelopes, Identity, type Bus } from "../../core/index.js";
import { AUDIT_DEFAULTS, readAudit, type AuditEntry } from "../../core/store/audit.js";
import { grant, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

const enc = new TextEncoder();
let tenants = 0;

describe("audit", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  const tenant = () => `audit${process.pid}-${++tenants}`;

  /** The first `n` records of the tenant's audit stream, verified. */
  async function firstRecords(bus: Bus, n: number, options: { kinds?: string[]; dropUnverified?: boolean } = {}): Promise<AuditEntry[]> {
    const out: AuditEntry[] = [];
    if (n === 0) return out;
    for await (const e of readAudit(bus, { from: 1, ...options })) {
      out.push(e);
      if (out.length === n) break;
    }
    return out;
  }

  async function streamState(bus: Bus) {
    const jsm = await jetstreamManager(bus.nc);
    return jsm.streams.info(bus.subjects.stream("AUDIT"), { subjects_filter: ">" });
  }

  it("the audit stream is bounded by age, bytes and count (discard old): defaults, and options on connect()", async () => {
    const byDefault = await open({ tenant: tenant() });
    const d = (await streamState(byDefault)).config;
    expect(d).toMatchObject({ max_age: AUDIT_DEFAULTS.maxAgeMs * 1_000_000, max_bytes: AUDIT_DEFAULTS.maxBytes, max_msgs: AUDIT_DEFAULTS.maxMsgs, discard: DiscardPolicy.Old });
    const chosen = await open({ tenant: tenant(), auditMaxAgeMs: 3_600_000, auditMaxBytes: 1 << 20, auditMaxMsgs: 5000 });
    const c = (await streamState(chosen)).config;
    expect(c).toMatchObject({ max_age: 3_600_000 * 1_000_000, max_bytes: 1 << 20, max_msgs: 5000, discard: DiscardPolicy.Old });

    // A stream made before it was bounded gets the limits at the next connect.
    const t = tenant();
    const raw = await natsConnect({ servers: nats.server.url });
    try {
      const jsm = await jetstreamManager(raw);
      await jsm.streams.add({ name: `MESH_${t.toUpperCase()}_AUDIT`, subjects: [`mesh.${t}.audit.>`], max_age: AUDIT_DEFAULTS.maxAgeMs * 1_000_000 });
      const upgraded = await open({ tenant: t, auditMaxMsgs: 7000 });
      expect((await streamState(upgraded)).config).toMatchObject({ max_msgs: 7000, max_bytes: AUDIT_DEFAULTS.maxBytes });
    } finally {
      await raw.close();
    }
  });

  it("a flood of 500 refused calls writes at most the burst plus one summary, and accounts for every refusal", async () => {
    const t = tenant();
    const burst = 10;
    const agentBus = await open({ tenant: t, auditRate: { burst, intervalMs: 60_000 } });
    const caller = await open({ tenant: t });
    // Named in the policy (so not UNKNOWN_SENDER), but not granted `echo`.
    await grant(agentBus, "other", { source: caller.id, target: agentBus.id, capabilities: ["other"] });
    let runs = 0;
    await agentBus.agent({ name: "guarded", skills: [{ id: "echo" }] }, { echo: () => (runs++, "") });
    const results = await Promise.allSettled(Array.from({ length: 500 }, () => caller.call("echo", "x")));
    expect(results.every((r) => r.status === "rejected" && (r.reason as AgentBusError).code === "DENIED")).toBe(true);
    expect(runs).toBe(0);
    await agentBus.close(); // ends the interval: the summary is written now

    const kinds = (await streamState(caller)).state.subjects ?? {};
    const denied = kinds[caller.subjects.audit("denied")] ?? 0;
    expect(denied).toBe(burst + 1);
    const records = await firstRecords(caller, denied, { kinds: ["denied"] });
    expect(records.every((r) => r.verified && r.record.from === caller.id && r.record.code === "DENIED")).toBe(true);
    const summaries = records.filter((r) => r.record.summary === true);
    expect(summaries).toHaveLength(1);
    expect(summaries[0]!.record).toMatchObject({ suppressed: 500 - burst, by: agentBus.id });
    expect(records.length - summaries.length + (summaries[0]!.record.suppressed as number)).toBe(500);
  });

  it("the reader flags records without a valid signature, and drops them on request", async () => {
    const t = tenant();
    const bus = await open({ tenant: t });
    const subject = bus.subjects.audit("denied");
    // A genuine record first.
    bus.audit("denied", { code: "DENIED", from: "someone", reason: "genuine" });
    const raw = await natsConnect({ servers: nats.server.url });
    try {
      const forge = (record: Record<string, unknown>) => enc.encode(JSON.stringify({ kind: "denied", at: Date.now(), ...record }));
      // No signature at all.
      await raw.request(subject, forge({ by: bus.id, reason: "unsigned" }));
      // Signed by bus's key over another body.
      const original = forge({ by: bus.id, reason: "original" });
      await raw.request(subject, forge({ by: bus.id, reason: "tampered" }), { headers: bus.envelopes.seal(subject, original), timeout: 5000 });
      // Validly signed by a stranger who claims to be the bus.
      const stranger = new Envelopes(Identity.generate());
      const claimed = forge({ by: bus.id, reason: "impersonated" });
      await raw.request(subject, claimed, { headers: stranger.seal(subject, claimed), timeout: 5000 });
      // Validly signed, but moved to another kind's subject.
      const moved = forge({ by: stranger.identity.id, reason: "moved" });
      const revokedSubject = bus.subjects.audit("revoked");
      await raw.request(revokedSubject, moved, { headers: stranger.seal(subject, moved), timeout: 5000 });
    } finally {
      await raw.close();
    }
    const all = await firstRecords(bus, 5);
    const byReason = Object.fromEntries(all.map((e) => [e.record.reason, e]));
    expect(byReason.genuine).toMatchObject({ verified: true, signer: bus.id });
    for (const forged of ["unsigned", "tampered", "impersonated", "moved"]) {
      expect(byReason[forged], forged).toMatchObject({ verified: false });
      expect(byReason[forged]!.problem, forged).toBeTruthy();
    }
    expect(byReason.unsigned!.problem).toMatch(/UNSIGNED/);
    expect(byReason.tampered!.problem).toMatch(/BAD_SIGNATURE/);
    expect(byReason.impersonated!.problem).toMatch(/names/);
    const genuineOnly = await firstRecords(bus, 1, { dropUnverified: true });
    expect(genuineOnly.map((e) => e.record.reason)).toEqual(["genuine"]);
  });
});
