import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { connect, Identity, textOf, type Bus } from "../../core/index.js";
import { freePort } from "../../nats/index.js";
import { targetOf } from "../../cli/options.js";
import { liveUpRecord, type UpRecord } from "../../cli/up-record.js";
import { eventually, quietLogger } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { ready, runCli, scratch, startUp } from "./helpers.js";

/** A bus acting as `identity` (a demo user, an up's admin) that takes `admin` as the tenant's trust root. */
const as = (servers: string, tenant: string, identity: Identity, admin: Identity): Promise<Bus> =>
  connect({ servers, tenant, identity, trustRoot: [admin.id], logger: quietLogger, presenceMaxAgeMs: undefined });

describe("agentbus up's record and demo grants", () => {
  const nats = useNatsServer();

  it("a demo up records its server in <data-dir>/up.json (0600, removed on stop); plain commands there act on it as the demo user", async () => {
    // Nothing on the local address: up starts its own secured server, where only issued identities get in.
    const nowhere = `nats://127.0.0.1:${await freePort()}`;
    const up = startUp(["--demo"], { files: { "agentbus.config.json": JSON.stringify({ nats: { localUrl: nowhere } }) } });
    const info = await ready(up);
    expect(info).toMatchObject({ natsSource: "embedded", secure: true });
    const dataDir = join(up.dir, ".agentbus");
    const file = join(dataDir, "up.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const record = JSON.parse(readFileSync(file, "utf8")) as UpRecord;
    const user = Identity.fromFile(join(dataDir, "demo-user.seed"));
    expect(record).toEqual({
      nats: info.nats, url: info.url, tenant: "default", pid: up.child.pid, secure: true,
      demo: { seed: join(dataDir, "demo-user.seed"), id: user.id },
      started: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });

    // As printed: no --nats, --tenant or --seed. A fresh identity would be refused by this server.
    const sent = await runCli(["send", "write", "the sea"], { cwd: up.dir });
    expect(sent.code, sent.stderr).toBe(0);
    expect(sent.stdout).toMatch(/^task [0-9a-f]{48} → write\n/);
    expect(sent.stdout).toContain("That is all on the sea for now.\n[completed]\n");
    // Nothing but the command's own output on stdout.
    const listed = await runCli(["ls", "--online", "--json"], { cwd: up.dir });
    expect(listed.code, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as Array<{ name: string }>).map((a) => a.name).sort()).toEqual(["coder", "echo", "orchestrator", "writer"]);
    // From elsewhere, the data dir names it: --data-dir, or AGENTBUS_DATA_DIR.
    const called = await runCli(["call", "echo", "from afar", "--data-dir", dataDir]);
    expect(called.code, called.stderr).toBe(0);
    expect(called.stdout).toBe("from afar\n");
    const viaEnv = await runCli(["call", "echo", "from env"], { env: { AGENTBUS_DATA_DIR: dataDir } });
    expect(viaEnv.stdout).toBe("from env\n");
    // Another tenant than up's: not as the demo user (who is issued in up's tenant only), so this server refuses the connection.
    const elsewhere = await runCli(["ls", "--tenant", "other"], { cwd: up.dir });
    expect(elsewhere.code).toBe(3);

    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(0);
    expect(existsSync(file)).toBe(false);

    // A record left by an up that is gone (killed) is ignored: the default server, a new identity.
    writeFileSync(file, JSON.stringify(record), { mode: 0o600 });
    expect(liveUpRecord(dataDir)).toBeUndefined();
    const target = targetOf({ dataDir });
    expect(target.where).toBe("nats://127.0.0.1:4222");
    expect(target.tenant).toBe("default");
    expect(target.identity).toBeUndefined();
  }, 120_000);

  it("two ups --demo in one tenant keep their own demo group and rule; stopping one leaves the other's calls working", async () => {
    const tenant = "twodemos";
    const servers = nats.server.url;
    // Both ups sign with one tenant admin key (the first one's, copied); each has its own gateway and demo identities.
    const dirA = scratch("agentbus-up-a-");
    const dirB = scratch("agentbus-up-b-");
    const gatewayA = Identity.generate();
    const gatewayB = Identity.generate();
    const admin = Identity.generate();
    for (const [dir, gateway] of [[dirA, gatewayA], [dirB, gatewayB]] as const) {
      mkdirSync(join(dir, ".agentbus"));
      gateway.writeSeed(join(dir, ".agentbus", "gateway.seed"));
      admin.writeSeed(join(dir, ".agentbus", "admin.seed"));
    }
    const ruleA = `demo-${gatewayA.id.slice(-8)}`;
    const ruleB = `demo-${gatewayB.id.slice(-8)}`;
    const policyBus = await as(servers, tenant, admin, admin);
    try {
      await policyBus.acl.setTrustRoot([admin.id]);
      // The shared group and rule of earlier versions, left by A's data dir: A removes them.
      await policyBus.acl.putGroup("demo", [gatewayA.id]);
      await policyBus.acl.putRule("demo", { source: "group:demo", target: "group:demo", capabilities: [">"] });

      const upA = startUp(["--demo", "--nats", servers, "--tenant", tenant], { dir: dirA });
      await ready(upA);
      await eventually(() => {
        const p = policyBus.acl.policy();
        return p.rules.has(ruleA) && p.groups.has(ruleA) && !p.rules.has("demo") && !p.groups.has("demo");
      }, 15_000);

      // A "demo" group that is not A's or B's (another data dir's): B leaves it alone.
      const stranger = Identity.generate().id;
      await policyBus.acl.putGroup("demo", [stranger]);
      const upB = startUp(["--demo", "--nats", servers, "--tenant", tenant], { dir: dirB });
      await ready(upB);
      await eventually(() => policyBus.acl.policy().rules.has(ruleB), 15_000);
      const policy = policyBus.acl.policy();
      expect(policy.rules.has(ruleA)).toBe(true);
      expect(policy.groups.get(ruleA)!.members).toContain(gatewayA.id);
      expect(policy.groups.get(ruleB)!.members).toContain(gatewayB.id);
      expect(policy.groups.get(ruleB)!.members).not.toContain(gatewayA.id);
      expect(policy.groups.get("demo")!.members).toEqual([stranger]);

      // Each demo user may call its own up's agents.
      const userA = await as(servers, tenant, Identity.fromFile(join(dirA, ".agentbus", "demo-user.seed")), admin);
      const userB = await as(servers, tenant, Identity.fromFile(join(dirB, ".agentbus", "demo-user.seed")), admin);
      try {
        const echoA = Identity.fromFile(join(dirA, ".agentbus", "demo", "echo.seed")).id;
        const echoB = Identity.fromFile(join(dirB, ".agentbus", "demo", "echo.seed")).id;
        await eventually(() => userA.discover({ capability: "echo", online: true }).length === 2, 15_000);
        expect(textOf(await userA.call("echo", "a to a", { target: echoA }))).toBe("a to a");
        expect(textOf(await userB.call("echo", "b to b", { target: echoB }))).toBe("b to b");

        // A stops: its grant goes, B's stays, and so does the group that is neither's.
        upA.child.kill("SIGTERM");
        expect(await upA.exited).toBe(0);
        await eventually(() => !policyBus.acl.policy().rules.has(ruleA) && !policyBus.acl.policy().groups.has(ruleA), 15_000);
        expect(policyBus.acl.policy().rules.has(ruleB)).toBe(true);
        expect(policyBus.acl.policy().groups.get("demo")!.members).toEqual([stranger]);
        expect(textOf(await userB.call("echo", "b after a", { target: echoB }))).toBe("b after a");
        await eventually(() => userB.discover({ capability: "echo", online: true }).length === 1, 15_000);
        expect(textOf(await userB.call("echo", "any echo"))).toBe("any echo");
        const done = await (await userB.submit("write", "the sea")).result({ timeout: 30_000 });
        expect(done.status.state).toBe("TASK_STATE_COMPLETED");

        upB.child.kill("SIGTERM");
        expect(await upB.exited).toBe(0);
        await eventually(() => !policyBus.acl.policy().rules.has(ruleB), 15_000);
      } finally {
        await Promise.all([userA.close(), userB.close()]);
      }
    } finally {
      await policyBus.close();
    }
  }, 180_000);

  it("up refuses an address that is not a NATS one (exit 2); a live record names the server and tenant only when no server is named", async () => {
    const up = startUp(["--nats", "http://127.0.0.1:8080", "--open"]);
    expect(await up.exited).toBe(2);
    expect(up.stderr()).toContain("/nats/url must match pattern");
    // A record whose process runs (this one's pid), read the way every command reads it; nothing connects here.
    const dataDir = scratch();
    const file = join(dataDir, "up.json");
    writeFileSync(file, JSON.stringify({ nats: "nats://127.0.0.1:4999", url: "http://127.0.0.1:1", tenant: "acme", pid: process.pid, secure: false, started: new Date().toISOString() }), { mode: 0o600 });
    expect(targetOf({ dataDir }, {})).toMatchObject({ tenant: "acme", where: `nats://127.0.0.1:4999 (agentbus up, pid ${process.pid}, recorded in ${file})`, identity: undefined });
    expect(targetOf({ dataDir }, { AGENTBUS_DATA_DIR: "/elsewhere", AGENTBUS_TENANT: "beta" })).toMatchObject({ tenant: "beta", where: expect.stringContaining("nats://127.0.0.1:4999") });
    expect(targetOf({ dataDir, nats: "nats://127.0.0.1:5000" }, {})).toMatchObject({ tenant: "default", where: "nats://127.0.0.1:5000" });
    expect(targetOf({ dataDir }, { NATS_URL: "nats://127.0.0.1:5001" })).toMatchObject({ tenant: "default", where: "nats://127.0.0.1:5001" });
    expect(targetOf({}, { AGENTBUS_DATA_DIR: dataDir })).toMatchObject({ tenant: "acme" });
  }, 30_000);
});
