/**
 * The static form of the permission model, for servers without auth
 * callout (2.9.10, the supported floor): tenants as accounts and each
 * identity's role permissions written into the config. Runs on every
 * server line (the floor lane included).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect as natsConnect, nkeyAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { authorityConfig, loadAuthorityKeys } from "../../authority/index.js";
import { connect, Identity, textOf, type Bus } from "../../core/index.js";
import { startServer, type NatsServer } from "../../nats/index.js";
import { quietLogger } from "../helpers/bus.js";

const enc = new TextEncoder();

describe("tenants as accounts with static permissions (any server version)", () => {
  let dir: string;
  let server: NatsServer;
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
    const keys = loadAuthorityKeys(join(dir, "authority"));
    server = await startServer({
      config: authorityConfig({
        keys,
        mode: "static",
        tenants: [{ name: "acme" }, { name: "beta" }],
        users: [
          { tenant: "acme", id: admin.id, role: "admin" },
          { tenant: "acme", id: agentId.id, role: "agent", serves: ["greet"], invokes: [] },
          { tenant: "acme", id: callerId.id, role: "caller", invokes: ["greet"] },
          { tenant: "beta", id: betaAdmin.id, role: "admin" },
        ],
      }),
      auth: { nkeySeed: new TextDecoder().decode(keys.service.getSeed()) },
    });
    // The admin provisions the tenant (streams and buckets) and sets its trust root.
    const a = await bus("acme", admin);
    await a.ensureTasks();
    await a.acl.setTrustRoot([admin.id]);
  }, 60_000);

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close().catch(() => {})));
    await server?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it("serves granted calls and tasks; refuses identities the config does not name", async () => {
    const a = await bus("acme", admin);
    const rev = await a.acl.putRule("greet", { source: callerId.id, target: "*", capabilities: ["greet"] });
    const agent = await bus("acme", agentId);
    await agent.agent({ name: "greeter", skills: [{ id: "greet" }] }, { greet: (ctx) => `hello, ${ctx.text}` });
    await agent.acl.applied(rev);
    const caller = await bus("acme", callerId);
    expect(textOf(await caller.call("greet", "Ada"))).toBe("hello, Ada");
    expect((await (await caller.submit("greet", "Grace")).result()).status.state).toBe("TASK_STATE_COMPLETED");
    await expect(bus("acme", Identity.generate())).rejects.toMatchObject({ code: "DENIED" });
  });

  it("a raw caller cannot write the policy buckets or sniff the tenant; another tenant sees nothing", async () => {
    const nc = await natsConnect({ servers: server.url, authenticator: nkeyAuthenticator(enc.encode(callerId.exportSeed())), inboxPrefix: `_INBOX.${callerId.id}`, reconnect: false });
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
    const a = await bus("acme", admin);
    expect(await (await new Kvm(a.nc).open("mesh_acme_acl")).get("rule.mine")).toBeNull();
    // beta's admin: acme's streams do not exist in its account.
    const beta = await natsConnect({ servers: server.url, authenticator: nkeyAuthenticator(enc.encode(betaAdmin.exportSeed())), reconnect: false });
    open.push(beta);
    await expect(new Kvm(beta).open("mesh_acme_tasks").then((kv) => kv.keys())).rejects.toThrow();
  });
});
