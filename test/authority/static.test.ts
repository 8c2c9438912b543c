/**
 * The static form of the authority, for servers without auth callout
 * (2.9.10, the supported floor): tenants as accounts and each issued
 * identity's role permissions written into the config, generated from the
 * identity directory and the tenants' signed ACLs. Runs on every server
 * line (the floor lane included).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect as natsConnect, nkeyAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { Authority, AuthorityState, authorityIn, staticServerConfig } from "../../authority/index.js";
import { connect, Identity, textOf, type Bus } from "../../core/index.js";
import { startServer, type NatsServer } from "../../nats/index.js";
import { eventually, quietLogger } from "../helpers/bus.js";
import { connectRaw } from "../helpers/nats.js";

const enc = new TextEncoder();

describe("tenants as accounts with static permissions (any server version)", () => {
  let dir: string;
  let server: NatsServer;
  let state: AuthorityState;
  const admin = Identity.generate();
  const agentId = Identity.generate();
  const callerId = Identity.generate();
  const betaAdmin = Identity.generate();
  const open: Array<Bus | NatsConnection> = [];

  const bus = async (tenant: string, identity: Identity): Promise<Bus> => {
    const b = await connect({ servers: server.url, tenant, identity, logger: quietLogger, trustRoot: [admin.id] });
    open.push(b);
    return b;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "agentbus-static-"));
    state = new AuthorityState(join(dir, "authority"));
    state.addTenant("acme");
    state.addTenant("beta");
    // First start: only the authority's own admin user in each tenant.
    server = await startServer({ config: await staticServerConfig({ state }), auth: { nkeySeed: new TextDecoder().decode(state.keys.service.getSeed()) } });
    const authority = await Authority.open({ servers: server.url, keys: state.keys, identity: state.identity, tenants: () => state.tenants(), logger: quietLogger });
    try {
      await authority.issue({ id: admin.id, tenant: "acme", role: "admin" });
      await authority.issue({ id: agentId.id, tenant: "acme", role: "agent", serves: ["greet"] });
      await authority.issue({ id: callerId.id, tenant: "acme", role: "caller" });
      await authority.issue({ id: betaAdmin.id, tenant: "beta", role: "admin" });
    } finally {
      await authority.stop();
    }
    // The authority's admin user provisions the tenant and sets its trust root; the admin grants.
    const provision = await connect({ servers: server.url, tenant: "acme", identity: authorityIn(state.identity, "acme"), logger: quietLogger, trustRoot: [admin.id] });
    await provision.ensureTasks();
    await provision.close();
    await server.reconfigure(await staticServerConfig({ state, servers: server.url }));
    const a = await bus("acme", admin);
    await a.acl.setTrustRoot([admin.id]);
    await a.acl.putRule("greet", { source: callerId.id, target: "*", capabilities: ["greet"] });
    // The grant reaches the server's permissions when the config is generated again.
    await server.reconfigure(await staticServerConfig({ state, servers: server.url }));
  }, 90_000);

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close().catch(() => {})));
    await server?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it("serves granted calls and tasks; refuses identities the config does not name", async () => {
    const agent = await bus("acme", agentId);
    await agent.agent({ name: "greeter", skills: [{ id: "greet" }] }, { greet: (ctx) => `hello, ${ctx.text}` });
    const caller = await bus("acme", callerId);
    expect(textOf(await caller.call("greet", "Ada"))).toBe("hello, Ada");
    expect((await (await caller.submit("greet", "Grace")).result()).status.state).toBe("TASK_STATE_COMPLETED");
    await expect(bus("acme", Identity.generate())).rejects.toMatchObject({ code: "DENIED" });
  });

  it("a raw caller cannot write the policy buckets or sniff the tenant; another tenant sees nothing", async () => {
    const nc = await connectRaw(server.url, callerId);
    open.push(nc);
    const errors: string[] = [];
    void (async () => {
      for await (const s of nc.status()) if (s.type === "error") errors.push(String(s.error));
    })();
    nc.publish("$KV.mesh_acme_acl.rule.mine", enc.encode(JSON.stringify({ source: callerId.id, target: "*", capabilities: [">"] })));
    nc.subscribe("mesh.acme.>");
    await nc.flush();
    await new Promise((r) => setTimeout(r, 300));
    expect(errors.some((e) => /permission/i.test(e) && e.includes("$KV.mesh_acme_acl.rule.mine"))).toBe(true);
    expect(errors.some((e) => /permission/i.test(e) && e.includes("mesh.acme.>"))).toBe(true);
    // Calls only to what the ACL granted when the config was generated.
    nc.publish("mesh.acme.cap.other", enc.encode("{}"));
    await nc.flush();
    await new Promise((r) => setTimeout(r, 300));
    expect(errors.some((e) => /permission/i.test(e) && e.includes("mesh.acme.cap.other"))).toBe(true);
    const a = await bus("acme", admin);
    expect(await (await new Kvm(a.nc).open("mesh_acme_acl")).get("rule.mine")).toBeNull();
    // beta's admin: acme's streams do not exist in its account.
    const beta = await natsConnect({ servers: server.url, authenticator: nkeyAuthenticator(enc.encode(betaAdmin.exportSeed())), reconnect: false });
    open.push(beta);
    await expect(new Kvm(beta).open("mesh_acme_tasks").then((kv) => kv.keys())).rejects.toThrow();
  });

  it("a revoked identity is dropped from the next configuration: its connection is closed and it is refused", async () => {
    const doomed = Identity.generate();
    const authority = await Authority.open({ servers: server.url, keys: state.keys, identity: state.identity, tenants: () => state.tenants(), logger: quietLogger });
    try {
      await authority.issue({ id: doomed.id, tenant: "acme", role: "caller" });
      await server.reconfigure(await staticServerConfig({ state, servers: server.url }));
      const nc = await connectRaw(server.url, doomed);
      open.push(nc);
      await authority.directory.revoke(doomed.id, "lost");
      await server.reconfigure(await staticServerConfig({ state, servers: server.url }));
      await eventually(() => nc.isClosed(), 5000);
      await expect(bus("acme", doomed)).rejects.toMatchObject({ code: "DENIED" });
    } finally {
      await authority.stop();
    }
  });
});
