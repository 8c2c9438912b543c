/**
 * Signed policy against a raw NATS client: writing the ACL or revocation
 * buckets without a tenant admin's key changes nothing, and every attempt
 * is audited. Key rotation and trust root rotation.
 */
import { describe, expect, it } from "vitest";
import { connect as natsConnect } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  AgentBusError,
  Identity,
  signEntry,
  signTrustLink,
  textOf,
  type Bus,
} from "../../core/index.js";
import { adminFor, eventually, grant, revokeAsAdmin, testAdmin, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

let tenants = 0;

async function code(p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => "OK", (e: unknown) => e);
  if (err === "OK") return "OK";
  expect(err).toBeInstanceOf(AgentBusError);
  return (err as AgentBusError).code;
}

describe("signed policy", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  const tenant = () => `pol${process.pid}-${++tenants}`;

  /** A raw connection (no library) and the tenant's two policy buckets; a collector of `bad_policy` audit records. */
  async function raw(bus: Bus): Promise<{ nc: NatsConnection; acl: KV; revoked: KV; audited: () => Array<{ key: string; bucket: string; reason: string }> }> {
    const nc = await natsConnect({ servers: nats.server.url });
    const kvm = new Kvm(nc);
    const records: Array<{ key: string; bucket: string; reason: string }> = [];
    const sub = nc.subscribe(bus.subjects.audit("bad_policy"));
    void (async () => {
      for await (const m of sub) records.push(m.json());
    })();
    await nc.flush();
    return { nc, acl: await kvm.open(bus.subjects.bucket("acl")), revoked: await kvm.open(bus.subjects.bucket("revoked")), audited: () => records };
  }

  /** An agent serving `secret` and `other`, and a caller named in the ACL (granted `other` only). */
  async function setup() {
    const t = tenant();
    const agentBus = await open({ tenant: t });
    const caller = await open({ tenant: t });
    await agentBus.agent({ name: "vault", skills: [{ id: "secret" }, { id: "other" }] }, { secret: () => "secret", other: () => "other" }, { tasks: false });
    await grant(agentBus, "caller-other", { source: caller.id, target: "*", capabilities: ["other"] }, caller);
    expect(textOf(await caller.call("other", "x"))).toBe("other");
    return { t, agentBus, caller };
  }

  it("a raw client's unsigned rule, a rule signed by a non-admin and a forged trust root change nothing, and are audited", async () => {
    const { t, agentBus, caller } = await setup();
    const r = await raw(agentBus);
    try {
      const selfGrant = { source: caller.id, target: "*", capabilities: [">"] };
      // 1. The old, unsigned format.
      let rev = await r.acl.put("rule.self", JSON.stringify(selfGrant));
      await agentBus.acl.applied(rev);
      expect(await code(caller.call("secret", "x"))).toBe("DENIED");
      // 2. Well signed, by a key that is not an admin.
      rev = await r.acl.put("rule.forged", JSON.stringify(signEntry(caller.identity, t, "acl", "rule.forged", { rule: selfGrant })));
      await agentBus.acl.applied(rev);
      expect(await code(caller.call("secret", "x"))).toBe("DENIED");
      // 3. A trust root of its own, then a rule signed under it.
      rev = await r.acl.put("trust.root", JSON.stringify({ links: [signTrustLink(caller.identity, t, [caller.id], undefined)] }));
      await agentBus.acl.applied(rev);
      expect(agentBus.acl.admins()).toEqual([testAdmin.id]);
      rev = await r.acl.put("rule.forged2", JSON.stringify(signEntry(caller.identity, t, "acl", "rule.forged2", { rule: selfGrant })));
      await agentBus.acl.applied(rev);
      expect(await code(caller.call("secret", "x"))).toBe("DENIED");
      // 4. Deleting the trust root: the root stays.
      await r.acl.delete("trust.root");
      await eventually(() => r.audited().some((a) => a.key === "trust.root" && /deleted/.test(a.reason)));
      expect(agentBus.acl.admins()).toEqual([testAdmin.id]);
      expect(await code(caller.call("secret", "x"))).toBe("DENIED");
      // A process that connects now, pinned to the admin, sees no grant either.
      const fresh = await open({ tenant: t });
      expect(fresh.acl.allows(caller.id, agentBus.id, "secret")).toBe(false);

      await eventually(() => {
        const keys = new Set(r.audited().filter((a) => a.bucket === agentBus.subjects.bucket("acl")).map((a) => a.key));
        return ["rule.self", "rule.forged", "trust.root", "rule.forged2"].every((k) => keys.has(k));
      });
      expect(r.audited().find((a) => a.key === "rule.forged")!.reason).toMatch(/not an admin/);
      expect(r.audited().find((a) => a.key === "rule.self")!.reason).toMatch(/unsigned/);

      // The admin's rule takes effect within a second.
      const admin = await adminFor(agentBus);
      const started = Date.now();
      await admin.acl.putRule("caller-secret", { source: caller.id, target: agentBus.id, capabilities: ["secret"] });
      await eventually(() => agentBus.acl.allows(caller.id, agentBus.id, "secret"), 1000, 10);
      expect(textOf(await caller.call("secret", "x"))).toBe("secret");
      expect(Date.now() - started).toBeLessThan(1000);
    } finally {
      await r.nc.close();
    }
  });

  it("a revocation cannot be lifted by a raw delete, purge or unsigned lift; a bus that connects afterwards refuses too", async () => {
    const { t, agentBus, caller } = await setup();
    const r = await raw(agentBus);
    try {
      await revokeAsAdmin(agentBus, caller.id, "key leaked");
      expect(await code(caller.call("other", "x"))).toBe("REVOKED");
      expect(agentBus.revocation(caller.id)).toMatchObject({ reason: "key leaked", by: testAdmin.id });

      await r.revoked.delete(caller.id);
      await eventually(() => r.audited().some((a) => a.key === caller.id && /deleted/.test(a.reason)));
      expect(await code(caller.call("other", "x"))).toBe("REVOKED");

      await r.revoked.purge(caller.id);
      await eventually(() => r.audited().some((a) => a.key === caller.id && /purged/.test(a.reason)));
      expect(await code(caller.call("other", "x"))).toBe("REVOKED");

      const rev = await r.revoked.put(caller.id, JSON.stringify(signEntry(caller.identity, t, "revoked", caller.id, { revoked: false })));
      expect(await agentBus.revocationApplied(rev)).toBe(true);
      await eventually(() => r.audited().some((a) => a.key === caller.id && /not an admin/.test(a.reason)));
      expect(await code(caller.call("other", "x"))).toBe("REVOKED");

      // Started after all that: the bucket holds only the forged lift, which does not count.
      const fresh = await open({ tenant: t });
      expect(fresh.isRevoked(caller.id)).toBe(true);

      // A non-admin bus cannot revoke or lift through the library either.
      expect(await code(caller.unrevoke(caller.id))).toBe("DENIED");
      expect(await code(caller.revoke(agentBus.id))).toBe("DENIED");
      expect(await code(caller.acl.putRule("x", { source: caller.id, target: "*", capabilities: [">"] }))).toBe("DENIED");

      // The admin's signed lift does.
      const admin = await adminFor(agentBus);
      const lifted = await admin.unrevoke(caller.id);
      await agentBus.revocationApplied(lifted);
      await fresh.revocationApplied(lifted);
      expect(fresh.isRevoked(caller.id)).toBe(false);
      expect(textOf(await caller.call("other", "x"))).toBe("other");
    } finally {
      await r.nc.close();
    }
  });

  it("key rotation: the new key keeps the grants and registers under its id; the old key is refused as rotated", async () => {
    const t = tenant();
    const oldKey = Identity.generate();
    const newKey = Identity.generate();
    const echoBus = await open({ tenant: t });
    await echoBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text }, { tasks: false });
    const oldBus = await open({ tenant: t, identity: oldKey });
    await oldBus.agent({ name: "greeter", skills: [{ id: "greet" }] }, { greet: (ctx) => `hello, ${ctx.text}` }, { tasks: false });
    const caller = await open({ tenant: t });
    const admin = await adminFor(echoBus);
    // The old key may call echo (through a group); the caller may call greet on the old key only.
    await admin.acl.putGroup("echoers", [oldKey.id]);
    const rev = await admin.acl.putRule("echoers", { source: "group:echoers", target: echoBus.id, capabilities: ["echo"] });
    const rev2 = await admin.acl.putRule("greet-old", { source: caller.id, target: oldKey.id, capabilities: ["greet"] });
    for (const b of [echoBus, oldBus, caller]) await b.acl.applied(Math.max(rev, rev2));
    expect(textOf(await oldBus.call("echo", "a"))).toBe("a");
    expect(textOf(await caller.call("greet", "Ada"))).toBe("hello, Ada");

    // The holder of both keys proves the move; an admin applies it.
    const proof = oldBus.proveRotation(newKey);
    expect(await code(caller.rotateIdentity(proof))).toBe("DENIED");
    const rotated = await admin.rotateIdentity(proof);
    for (const b of [echoBus, oldBus, caller]) await b.acl.applied(rotated);
    expect(echoBus.revocation(oldKey.id)).toMatchObject({ reason: "rotated" });
    expect(await code(oldBus.call("echo", "b"))).toBe("REVOKED");
    await eventually(() => !caller.discover({ name: "greeter" }).some((a) => a.id === oldKey.id));

    // The agent comes back under its new key: same grants, in both directions.
    await oldBus.close();
    const newBus = await open({ tenant: t, identity: newKey });
    await newBus.agent({ name: "greeter", skills: [{ id: "greet" }] }, { greet: (ctx) => `hello, ${ctx.text}` }, { tasks: false });
    expect(textOf(await newBus.call("echo", "c"))).toBe("c");
    await eventually(() => caller.discover({ capability: "greet", online: true }).map((a) => a.id).join() === newKey.id);
    expect(textOf(await caller.call("greet", "Grace"))).toBe("hello, Grace");
    expect(newBus.acl.names(newKey.id)).toBe(true);

    // A raw delete of the rotation record does not bring the old key back.
    const r = await raw(echoBus);
    try {
      await r.acl.delete(`rotation.${oldKey.id}`);
      await eventually(() => r.audited().some((a) => a.key === `rotation.${oldKey.id}`));
      expect(echoBus.isRevoked(oldKey.id)).toBe(true);
      const fresh = await open({ tenant: t });
      expect(fresh.isRevoked(oldKey.id)).toBe(true);
    } finally {
      await r.nc.close();
    }
  });

  it("trust root rotation: accepted when an admin of the previous root signs it, ignored otherwise", async () => {
    const { t, agentBus, caller } = await setup();
    const admin = await adminFor(agentBus);
    const next = Identity.generate();
    await admin.acl.setTrustRoot([next.id]);
    // Each bus reads the policy bucket on its own connection: the two views catch up one after the other.
    await eventually(() => agentBus.acl.admins().join() === next.id && caller.acl.admins().join() === next.id);
    expect(caller.acl.admins()).toEqual([next.id]);
    // Rules the old admin signed while it was admin stay; it cannot sign new ones.
    expect(textOf(await caller.call("other", "x"))).toBe("other");
    expect(await code(admin.acl.putRule("late", { source: caller.id, target: "*", capabilities: [">"] }))).toBe("DENIED");

    // The new admin can; a bus pinned to the old admin follows the chain.
    const nextBus = await open({ tenant: t, identity: next });
    await grant(agentBus, "unused", { source: caller.id, target: "*", capabilities: ["none"] }).then(
      () => expect.unreachable("the old admin is no longer an admin"),
      (err: unknown) => expect((err as AgentBusError).code).toBe("DENIED"),
    );
    const rev = await nextBus.acl.putRule("caller-secret", { source: caller.id, target: "*", capabilities: ["secret"] });
    await agentBus.acl.applied(rev);
    expect(textOf(await caller.call("secret", "x"))).toBe("secret");

    // A record that does not extend the chain (unsigned, or a new chain by the retired admin) is ignored.
    const r = await raw(agentBus);
    try {
      let raw1 = await r.acl.put("trust.root", JSON.stringify({ links: [{ admins: [caller.id], prev: "", by: caller.id, at: Date.now(), sig: "" }] }));
      await agentBus.acl.applied(raw1);
      raw1 = await r.acl.put("trust.root", JSON.stringify({ links: [signTrustLink(testAdmin, t, [testAdmin.id], undefined)] }));
      await agentBus.acl.applied(raw1);
      expect(agentBus.acl.admins()).toEqual([next.id]);
      await eventually(() => r.audited().filter((a) => a.key === "trust.root").length >= 2);
      expect(r.audited().filter((a) => a.key === "trust.root").every((a) => /not accepted/.test(a.reason))).toBe(true);
      expect(textOf(await caller.call("secret", "x"))).toBe("secret");
    } finally {
      await r.nc.close();
    }
  });
});
