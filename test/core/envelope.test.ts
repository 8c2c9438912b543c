import { describe, expect, it } from "vitest";
import { AgentBusError, Envelopes, Header, Identity, Subjects, childTrace, compareVersions, featuresOf, traceIdOf } from "../../core/index.js";
import { ReplayGuard, replayKey, replayMaxAgeMs } from "../../core/security/replay.js";

const enc = new TextEncoder();

describe("Envelopes", () => {
  const a = new Envelopes(Identity.generate());
  const b = new Envelopes(Identity.generate());
  const body = enc.encode('{"x":1}');

  it("MACs for known recipients and signs otherwise; both verify", () => {
    const mac = a.seal("s", body, {}, [b.identity.id, Identity.generate().id]);
    expect(mac.get(Header.sig)).toBe("");
    expect(b.open({ subject: "s", data: body, headers: mac }).auth).toBe("mac");
    const sig = a.seal("s", body);
    expect(sig.get(Header.mac)).toBe("");
    expect(b.open({ subject: "s", data: body, headers: sig }).auth).toBe("signature");
  });

  it("binds the subject: a message moved to another subject fails", () => {
    const h = a.seal("mesh.t.cap.read", body);
    expect(() => b.open({ subject: "mesh.t.cap.delete", data: body, headers: h })).toThrow(expect.objectContaining({ code: "BAD_SIGNATURE" }));
  });

  it("checks revocation before anything expensive", () => {
    const revoking = new Envelopes(Identity.generate(), { isRevoked: (id) => id === a.identity.id });
    const h = a.seal("s", body);
    expect(() => revoking.open({ subject: "s", data: body, headers: h })).toThrow(expect.objectContaining({ code: "REVOKED" }));
  });

  it("refuses oversize bodies first", () => {
    const small = new Envelopes(Identity.generate(), { maxPayload: 4 });
    expect(() => small.open({ subject: "s", data: body })).toThrow(AgentBusError);
    expect(() => small.open({ subject: "s", data: body })).toThrow(expect.objectContaining({ code: "PAYLOAD_TOO_LARGE" }));
  });
});

describe("stored messages (work items, direct messages)", () => {
  const sender = new Envelopes(Identity.generate());
  const receiver = new Envelopes(Identity.generate());
  const body = enc.encode('{"x":1}');
  const hourAgo = Date.now() - 3_600_000;
  const sealedAnHourAgo = new Envelopes(sender.identity, { clock: () => hourAgo }).seal("s", body);
  const msg = { subject: "s", data: body, headers: sealedAnHourAgo };

  it("checks Mesh-Ts against the time the stream stored the message, not the time it is read", () => {
    expect(receiver.open(msg, { durable: true, storedAt: hourAgo + 50 }).from).toBe(sender.identity.id);
    expect(() => receiver.open(msg, { durable: true, storedAt: Date.now() })).toThrow(expect.objectContaining({ code: "EXPIRED" }));
    // Task events are read back without a stored-time check; a live message is checked against now.
    expect(receiver.open(msg, { durable: true }).from).toBe(sender.identity.id);
    expect(() => receiver.open(msg)).toThrow(expect.objectContaining({ code: "EXPIRED" }));
  });
});

describe("shared replay memory keys", () => {
  it("keeps plain ids readable, hashes anything else into a valid KV key, and lives twice the window (at least 2 min)", () => {
    const from = Identity.generate().id;
    expect(replayKey(from, "abcDEF123_-x")).toBe(`${from}.abcDEF123_-x`);
    const odd = replayKey(from, "task.1/turn 2");
    expect(odd).toMatch(new RegExp(`^${from}\\.=[-_A-Za-z0-9]+$`));
    expect(replayKey(from, "task.1/turn 3")).not.toBe(odd);
    expect(replayMaxAgeMs(60_000)).toBe(120_000);
    expect(replayMaxAgeMs(1500)).toBe(120_000);
    expect(replayMaxAgeMs(300_000)).toBe(600_000);
  });
});

describe("ReplayGuard", () => {
  it("remembers ids for at least twice the window", () => {
    const g = new ReplayGuard(1000);
    const t = 1_000_000;
    expect(g.firstSeen("a", t)).toBe(true);
    expect(g.firstSeen("a", t + 1)).toBe(false);
    expect(g.firstSeen("a", t + 2500)).toBe(false); // rotated once: still in the previous generation
    expect(g.firstSeen("b", t + 2500)).toBe(true);
    expect(g.firstSeen("a", t + 10_000)).toBe(true); // long gone (and refused as expired by the time check)
  });
});

describe("Subjects", () => {
  it("builds the documented names and refuses bad tokens", () => {
    const s = new Subjects("mesh", "acme");
    expect(s.cap("mcp.fs.read")).toBe("mesh.acme.cap.mcp.fs.read");
    expect(s.stream("WORK")).toBe("MESH_ACME_WORK");
    expect(s.bucket("agents")).toBe("mesh_acme_agents");
    expect(() => s.cap("a.*")).toThrow(expect.objectContaining({ code: "INVALID_INPUT" }));
    expect(() => s.cap("a..b")).toThrow(AgentBusError);
    expect(() => new Subjects("mesh", "Acme")).toThrow(AgentBusError);
    expect(() => s.taskEvents("a.b")).toThrow(AgentBusError);
  });
});

describe("trace context and server features", () => {
  it("continues a valid traceparent and starts one otherwise", () => {
    const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const child = childTrace({ traceparent: parent });
    expect(traceIdOf(child.traceparent)).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(child.traceparent).not.toBe(parent);
    expect(traceIdOf(childTrace({ traceparent: "garbage" }).traceparent)).toMatch(/^[0-9a-f]{32}$/);
    expect(traceIdOf(childTrace().traceparent)).toMatch(/^[0-9a-f]{32}$/);
  });

  it("gates features on the server version", () => {
    expect(featuresOf("2.9.10")).toMatchObject({ multiFilter: false, messageTtl: false, termReason: false, replicatedCas: false });
    expect(featuresOf("2.9.21")).toMatchObject({ multiFilter: false, replicatedCas: true });
    expect(featuresOf("2.10.4")).toMatchObject({ multiFilter: true, messageTtl: false });
    expect(featuresOf("2.11.0")).toMatchObject({ messageTtl: true, termReason: true });
    expect(compareVersions("2.10.0", "2.9.10")).toBeGreaterThan(0);
  });
});
