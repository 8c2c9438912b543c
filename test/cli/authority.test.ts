/**
 * The operators' commands against a secured server, as child processes:
 * tenant create → identity issue → acl allow with the admin seed → an agent
 * serves and a caller calls with --seed → identity revoke closes the
 * caller's connection and refuses the next call; the lists with --json;
 * and the path of an operator's own nats-server (authority config, include,
 * authority serve, tenant create --server-pid).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connect as natsConnect, nkeyAuthenticator } from "@nats-io/transport-node";
import { AuthorityState, authorityIn, recordServer, startSecureNats, type SecureNats } from "../../authority/index.js";
import { Identity } from "../../core/index.js";
import { findNatsServer, freePort, natsServerVersion } from "../../nats/index.js";
import { probe } from "../../nats/ready.js";
import { eventually, quietLogger } from "../helpers/bus.js";

const main = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));
const echoAgent = fileURLToPath(new URL("../../agents/echo.ts", import.meta.url));
const enc = new TextEncoder();
const [, minor] = natsServerVersion(findNatsServer()).split(".").map(Number);
const calloutServer = minor! >= 10;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs one CLI command to its end. */
function run(args: string[], cwd?: string): Promise<Run> {
  return new Promise((resolve) => {
    const { NATS_URL: _n, AGENTBUS_AUTHORITY_DIR: _d, ...env } = process.env;
    const child = spawn(process.execPath, [main, ...args], { cwd, env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += String(d)));
    child.stderr.on("data", (d) => (stderr += String(d)));
    child.on("exit", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Starts a long-running CLI command; `line()` resolves with the first stdout line matching. */
const children: ChildProcess[] = [];
function start(args: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const { NATS_URL: _n, ...env } = process.env;
  const child = spawn(process.execPath, [main, ...args], { env });
  children.push(child);
  let output = "";
  child.stdout!.on("data", (d) => (output += String(d)));
  child.stderr!.on("data", (d) => (output += String(d)));
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  return { child, output: () => output, exited };
}

const json = <T>(r: Run): T => {
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
};

afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
});

// Each command is a fresh Node process compiling TypeScript (1–3 s on a loaded machine).
describe.skipIf(!calloutServer)("agentbus tenant, identity and authority commands", { timeout: 240_000 }, () => {
  let work: string;
  let dir: string;
  let nats: SecureNats;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "agentbus-cli-authority-"));
    dir = join(work, "authority");
    nats = await startSecureNats({ dir, tenants: [], logger: quietLogger });
    // As agentbus up does: where tenant create finds the config to rewrite and the server to reload.
    const s = nats.server;
    recordServer(dir, { kind: "launched", url: s.url, pid: s.pid, configFile: s.configFile, port: s.port, httpPort: s.httpPort, storeDir: s.storeDir });
  }, 60_000);

  afterAll(async () => {
    await nats?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it("tenant create → identity issue → acl allow → an agent serves, a caller calls → revoke closes and refuses the caller", async () => {
    const url = nats.server.url;
    const common = ["--dir", dir, "--nats", url];

    const created = json<{ tenant: string; admin: string; adminSeed: string; trustRoot: string[]; reloaded: boolean }>(await run(["tenant", "create", "acme", ...common, "--json"]));
    expect(created).toMatchObject({ tenant: "acme", reloaded: true, trustRoot: [created.admin] });
    expect(statSync(created.adminSeed).mode & 0o777).toBe(0o600);
    const adminSeed = readFileSync(created.adminSeed, "utf8").trim();
    expect(Identity.fromSeed(adminSeed).id).toBe(created.admin);
    expect(nats.state.tenants().map((t) => t.name)).toEqual(["acme"]);

    const agentSeed = join(work, "echo.nk");
    const callerSeed = join(work, "caller.nk");
    const agentRun = await run(["identity", "issue", ...common, "--tenant", "acme", "--role", "agent", "--serves", "echo", "--seed-out", agentSeed, "--name", "echo", "--json"]);
    const agent = json<{ id: string; role: string; serves: string[]; seedFile: string }>(agentRun);
    expect(agent).toMatchObject({ role: "agent", serves: ["echo"], seedFile: agentSeed });
    const caller = json<{ id: string }>(await run(["identity", "issue", ...common, "--tenant", "acme", "--role", "caller", "--seed-out", callerSeed, "--json"]));
    for (const [file, id] of [[agentSeed, agent.id], [callerSeed, caller.id]] as const) {
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(Identity.fromFile(file).id).toBe(id);
    }
    // Seeds are never printed.
    expect(agentRun.stdout + agentRun.stderr).not.toContain(readFileSync(agentSeed, "utf8").trim());

    const tenantOpts = ["--nats", url, "--tenant", "acme"];
    const allowed = await run(["acl", "allow", "caller-echo", caller.id, "*", "echo", ...tenantOpts, "--admin-seed", created.adminSeed]);
    expect(allowed.code, allowed.stderr).toBe(0);

    const served = start(["agent", "run", echoAgent, ...tenantOpts, "--seed", agentSeed]);
    await eventually(() => served.output().includes("serves echo"), 60_000);

    let called: Run = { code: -1, stdout: "", stderr: "" };
    for (let i = 0; i < 10 && called.code !== 0; i++) called = await run(["call", "echo", "hello acme", ...tenantOpts, "--seed", callerSeed]);
    expect(called.code, called.stderr).toBe(0);
    expect(called.stdout.trim()).toBe("hello acme");

    // An open connection of the caller (no reconnect, so closing it is final).
    const open = await natsConnect({ servers: url, authenticator: nkeyAuthenticator(enc.encode(readFileSync(callerSeed, "utf8").trim())), user: "acme", inboxPrefix: `_INBOX.${caller.id}`, reconnect: false });
    const revoked = json<{ id: string; revoked: boolean; reason: string; closed: number }>(await run(["identity", "revoke", caller.id, ...common, "--reason", "left the team", "--json"]));
    expect(revoked).toMatchObject({ id: caller.id, revoked: true, reason: "left the team" });
    expect(revoked.closed).toBeGreaterThanOrEqual(1);
    await eventually(() => open.isClosed(), 5_000);
    const refused = await run(["call", "echo", "again", ...tenantOpts, "--seed", callerSeed]);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain(`refused identity ${caller.id} in tenant acme`);
    // A revoked key is not issued again.
    const reissued = await run(["identity", "issue", ...common, "--tenant", "acme", "--role", "caller", "--seed", callerSeed]);
    expect(reissued.code).toBe(2);
    expect(reissued.stderr).toContain("was revoked (left the team)");

    const tenants = json<Array<{ name: string; admins: string[]; exports: unknown[] }>>(await run(["tenant", "ls", "--dir", dir, "--json"]));
    expect(tenants).toEqual([{ name: "acme", admins: [created.admin], exports: [] }]);
    const records = json<Array<{ id: string; tenant: string; role: string; revokedAt?: number; reason?: string; serves?: string[] }>>(await run(["identity", "ls", ...common, "--tenant", "acme", "--json"]));
    expect(records.map((r) => [r.id, r.role])).toEqual([[created.admin, "admin"], [agent.id, "agent"], [caller.id, "caller"]]);
    expect(records.find((r) => r.id === caller.id)).toMatchObject({ reason: "left the team", revokedAt: expect.any(Number) });
    expect(records.find((r) => r.id === agent.id)?.serves).toEqual(["echo"]);

    served.child.kill("SIGTERM");
    expect(await served.exited).toBe(0);
  });

  it("usage errors exit 2 and an unreachable server exits 3, with clear messages", async () => {
    const badRole = await run(["identity", "issue", "--dir", dir, "--role", "boss"]);
    expect(badRole.code).toBe(2);
    expect(badRole.stderr).toContain("--role must be one of agent, caller, bridge, admin");
    const noServes = await run(["identity", "issue", "--dir", dir, "--role", "agent", "--seed-out", join(work, "x.nk")]);
    expect(noServes.code).toBe(2);
    expect(noServes.stderr).toContain("give --serves");
    const noAuthority = await run(["tenant", "ls", "--dir", join(work, "nowhere")]);
    expect(noAuthority.code).toBe(2);
    expect(noAuthority.stderr).toContain(`no authority in ${join(work, "nowhere")}`);
    const nowhere = `nats://127.0.0.1:${await freePort()}`;
    const unreachable = await run(["identity", "ls", "--dir", dir, "--nats", nowhere, "--json"]);
    expect(unreachable.code).toBe(3);
    expect(JSON.parse(unreachable.stderr).error).toMatchObject({ code: "UNAVAILABLE", message: expect.stringContaining(`cannot connect to NATS at ${nowhere}`) });
  });

  it("an operator's own nats-server: authority config, include, authority serve, tenant create --server-pid", async () => {
    const own = join(work, "own");
    const authDir = join(own, "authority");
    const configured = json<{ file: string; include: string }>(await run(["authority", "config", "--dir", authDir, "--out", join(own, "agentbus.conf"), "--json"]));
    expect(configured.include).toBe("include agentbus.conf");
    expect(readFileSync(configured.file, "utf8")).toContain("auth_callout");
    const port = await freePort();
    const url = `nats://127.0.0.1:${port}`;
    writeFileSync(join(own, "nats.conf"), [`listen: 127.0.0.1:${port}`, `jetstream { store_dir: "${join(own, "data")}" }`, configured.include, ""].join("\n"));
    const server = spawn(findNatsServer(), ["-c", join(own, "nats.conf"), "-P", join(own, "nats.pid")], { stdio: "ignore" });
    children.push(server);
    const serviceSeed = readFileSync(join(authDir, "service.nk"), "utf8").trim();
    await eventually(() => probe({ url, auth: { nkeySeed: serviceSeed }, jetstream: true, timeoutMs: 500 }).then(() => true, () => false), 15_000);

    const serving = start(["authority", "serve", "--dir", authDir, "--nats", url]);
    await eventually(() => serving.output().includes("authority answering"), 60_000);
    const created = json<{ tenant: string; admin: string; reloaded: boolean }>(await run(["tenant", "create", "shop", "--dir", authDir, "--nats", url, "--server-pid", join(own, "nats.pid"), "--json"]));
    expect(created).toMatchObject({ tenant: "shop", reloaded: true });
    expect(readFileSync(configured.file, "utf8")).toMatch(/\bshop\b/);
    const seed = join(own, "buyer.nk");
    const buyer = json<{ id: string }>(await run(["identity", "issue", "--dir", authDir, "--nats", url, "--tenant", "shop", "--role", "caller", "--seed-out", seed, "--json"]));
    // The running authority places the issued key in its tenant's account; an unknown key is refused.
    const nc = await natsConnect({ servers: url, authenticator: nkeyAuthenticator(enc.encode(readFileSync(seed, "utf8").trim())), user: "shop", reconnect: false });
    expect(nc.info?.auth_required).toBe(true);
    await nc.close();
    await expect(natsConnect({ servers: url, authenticator: nkeyAuthenticator(enc.encode(Identity.generate().exportSeed())), reconnect: false })).rejects.toThrow(/Authorization/i);
    expect(buyer.id).toMatch(/^U/);
    serving.child.kill("SIGTERM");
    expect(await serving.exited).toBe(0);
    server.kill("SIGTERM");
  });

  it("authority config --static: a configuration any nats-server accepts, with the authority's admin user in each tenant", async () => {
    const dir = join(work, "static");
    const state = new AuthorityState(join(dir, "authority"));
    state.addTenant("shop");
    const out = join(dir, "agentbus.conf");
    const written = json<{ file: string; include: string; static: boolean }>(await run(["authority", "config", "--static", "--dir", state.dir, "--out", out, "--json"]));
    expect(written).toMatchObject({ file: out, include: "include agentbus.conf", static: true });
    const text = readFileSync(out, "utf8");
    expect(text).not.toContain("auth_callout");
    expect(text).toContain(authorityIn(state.identity, "shop").id);
    writeFileSync(join(dir, "nats.conf"), [`listen: 127.0.0.1:-1`, `jetstream { store_dir: "${join(dir, "data")}" }`, written.include, ""].join("\n"));
    const bins = [findNatsServer(), ...(existsSync("/usr/sbin/nats-server") ? ["/usr/sbin/nats-server"] : [])];
    for (const bin of bins) {
      const checked = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(bin, ["-t", "-c", join(dir, "nats.conf")]);
        let out = "";
        child.stdout.on("data", (d) => (out += String(d)));
        child.stderr.on("data", (d) => (out += String(d)));
        child.on("exit", (code) => resolve({ code, out }));
      });
      expect(checked.code, `${bin}: ${checked.out}`).toBe(0);
    }
  });
});
