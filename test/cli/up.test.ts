import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ClientFactory } from "@a2a-js/sdk/client";
import { Role, TaskState, type Task as SdkTask } from "@a2a-js/sdk";
import { SignJWT, exportJWK, generateKeyPair } from "jose";
import { describe, expect, it } from "vitest";
import { connect as natsConnect } from "@nats-io/transport-node";
import { compareVersions, connect, Identity, textOf } from "../../core/index.js";
import { findNatsServer, freePort, natsServerVersion } from "../../nats/index.js";
import { probe } from "../../nats/ready.js";
import { hashApiKey } from "../../bridges/a2a/index.js";
import { adminFor, eventually, grant, quietLogger, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { parseExposition, valueOf } from "../helpers/prometheus.js";
import { ready, runCli, startUp } from "./helpers.js";

const main = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));

const message = (text: string) => ({
  tenant: "",
  message: { messageId: `m-${Math.random().toString(36).slice(2)}`, contextId: "", taskId: "", role: Role.ROLE_USER, parts: [{ content: { $case: "text" as const, value: text }, metadata: undefined, filename: "", mediaType: "" }], metadata: undefined, extensions: [], referenceTaskIds: [] },
  configuration: { acceptedOutputModes: [], taskPushNotificationConfig: undefined, historyLength: undefined, returnImmediately: false },
  metadata: undefined,
});

describe("agentbus up", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("with no NATS reachable starts a secured embedded server, answers A2A SendMessage to echo, and stops it on SIGTERM", async () => {
    // Nothing listens on the "local" address, so up must start its own server.
    const nowhere = `nats://127.0.0.1:${await freePort()}`;
    const up = startUp(["--demo"], { files: { "agentbus.config.json": JSON.stringify({ nats: { localUrl: nowhere } }) } });
    const info = await ready(up);
    expect(info.natsSource).toBe("embedded");
    expect(info.nats).not.toBe(nowhere);
    expect(info.secure).toBe(true);
    expect(up.stderr()).not.toContain("requires no authentication");

    // A client without an issued key cannot connect at all: no credentials, or a key the authority never issued.
    await expect(natsConnect({ servers: info.nats, reconnect: false })).rejects.toThrow(/Authorization/i);
    await expect(connect({ servers: info.nats, identity: Identity.generate(), logger: quietLogger })).rejects.toMatchObject({ code: "DENIED" });
    // The demo's CLI identity was issued (a caller) and granted by the demo rule.
    const user = await connect({ servers: info.nats, identity: Identity.fromFile(join(up.dir, ".agentbus", "demo-user.seed")), auth: { nkey: true }, logger: quietLogger });
    try {
      expect(textOf(await user.call("echo", "through the account"))).toBe("through the account");
    } finally {
      await user.close();
    }
    // up recorded its server for agentbus tenant create.
    const record = JSON.parse(readFileSync(join(up.dir, ".agentbus", "authority", "server.json"), "utf8")) as { kind: string; url: string };
    expect(record).toMatchObject({ kind: "launched", url: info.nats });

    const client = await new ClientFactory().createFromUrl(`${info.url}/a2a/echo/.well-known/agent-card.json`, "");
    const task = (await client.sendMessage(message("hello from A2A"))) as SdkTask;
    expect(task.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(task.artifacts.flatMap((a) => a.parts.map((p) => (p.content?.$case === "text" ? p.content.value : ""))).join("")).toBe("hello from A2A");
    expect((await fetch(`${info.url}/ready`)).status).toBe(200);
    expect((await fetch(`${info.url}/health`)).status).toBe(200);
    // /metrics is Prometheus text and has counted the task.
    await eventually(async () => valueOf(parseExposition(await (await fetch(`${info.url}/metrics`)).text()), "agentbus_tasks_finished_total", { capability: "echo", state: "completed" }) === 1);
    const page = await fetch(`${info.url}/monitor/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("<html");

    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(0);
    // The embedded server went with it, and so did its record.
    await expect(probe({ url: info.nats, jetstream: false, timeoutMs: 500 })).rejects.toThrow();
    expect(existsSync(join(up.dir, ".agentbus", "authority", "server.json"))).toBe(false);
  }, 90_000);

  it("--regions and --edges: an embedded supercluster and an edge site with the tenant's accounts on every node, the demo agents in each region and echo at the edge; a task pinned to the other region runs there, one from the edge for a hub capability is forwarded; SIGTERM stops it all", async () => {
    if (compareVersions(natsServerVersion(findNatsServer()), "2.10.0") < 0) return;
    const up = startUp(["--demo", "--regions", "east,west", "--edges", "shop"]);
    const info = (await ready(up)) as Awaited<ReturnType<typeof ready>> & { region: string; regions: Record<string, string[]>; edges: Record<string, string> };
    expect(info).toMatchObject({ natsSource: "embedded", secure: true, region: "east" });
    expect(Object.keys(info.regions)).toEqual(["east", "west"]);
    expect(Object.keys(info.edges)).toEqual(["shop"]);
    expect(info.nats).toBe(info.regions.east![0]);
    // The monitor's topology: both regions, the demo's four agents live in each; the edge with its echo, heard from.
    await eventually(async () => {
      const t = (await (await fetch(`${info.url}/v1/topology`)).json()) as { regions: Array<{ name: string; agents: number; link?: { up: boolean } }>; edges?: Array<{ name: string; agents: number; link: { up: boolean } }> };
      return t.regions.map((r) => `${r.name}:${r.agents}`).join() === "east:4,west:4" && t.regions[1]!.link?.up === true && t.edges?.map((e) => `${e.name}:${e.agents}:${e.link.up}`).join() === "shop:1:true";
    }, 30_000, 200);
    // The demo user at the edge, by configuration: echo runs there, write (served by the hub only) is forwarded to east.
    const atEdge = await connect({ servers: info.edges.shop!, identity: Identity.fromFile(join(up.dir, ".agentbus", "demo-user.seed")), auth: { nkey: true }, hub: { domain: "hub", region: "east" }, logger: quietLogger });
    try {
      const local = await (await atEdge.submit("echo", "at the edge")).result({ timeout: 20_000 });
      expect(local.status.state).toBe("TASK_STATE_COMPLETED");
      expect(local.metadata.forward).toBeUndefined();
      const far = await (await atEdge.submit("write", "the sea")).result({ timeout: 30_000 });
      expect(far.status.state).toBe("TASK_STATE_COMPLETED");
      // Run in east, from the edge site (its region is its domain).
      expect(far.metadata).toMatchObject({ region: "east", forwardedFrom: "shop" });
    } finally {
      await atEdge.close();
    }
    // The demo user from west, federated by configuration; pinned to east, the task runs there.
    const user = await connect({ servers: info.regions.west!, identity: Identity.fromFile(join(up.dir, ".agentbus", "demo-user.seed")), auth: { nkey: true }, region: "west", regions: ["east", "west"], logger: quietLogger });
    try {
      expect((await (await user.submit("echo", "stay", { region: "east" })).result({ timeout: 20_000 })).metadata).toMatchObject({ region: "east", pinned: true });
      expect((await (await user.submit("echo", "here")).result({ timeout: 20_000 })).metadata.region).toBe("west");
    } finally {
      await user.close();
    }
    // A plain command in up's directory: up's record makes it federated, in the gateway's region, as the demo user.
    const sent = await runCli(["send", "echo", "from the record", "--json"], { cwd: up.dir });
    expect(sent.code, sent.stderr).toBe(0);
    expect((JSON.parse(sent.stdout.split("\n")[0]!) as { task: { metadata: { region?: string } } }).task.metadata.region).toBe("east");
    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(0);
    for (const url of [...Object.values(info.regions).flat(), ...Object.values(info.edges)]) await expect(probe({ url, jetstream: false, timeoutMs: 500 })).rejects.toThrow();
  }, 150_000);

  it("uses the NATS it is given; SIGTERM lets a running task finish before exiting 0", async () => {
    const up = startUp(["--demo", "--nats", nats.server.url, "--tenant", "uptenant"]);
    const info = await ready(up);
    expect(info.natsSource).toBe("given");
    expect(info.nats).toBe(nats.server.url);
    expect(info.secure).toBe(false);
    // A server that lets anyone in is named plainly, whatever the log level.
    expect(up.stderr()).toContain(`agentbus up: WARNING: the NATS server at ${nats.server.url} requires no authentication.`);

    // The demo agents registered on the given server; the demo identity may call them.
    const user = await open({ tenant: "uptenant", presenceMaxAgeMs: undefined, identity: Identity.fromFile(join(up.dir, ".agentbus", "demo-user.seed")) });
    await eventually(() => ["echo", "writer", "orchestrator", "coder"].every((name) => user.discover({ name, online: true }).length === 1), 15_000);
    expect(textOf(await user.call("echo", "ping"))).toBe("ping");
    const echoId = user.discover({ name: "echo" })[0]!.id;

    // A streaming task is running when the stop comes: it still completes.
    const handle = await user.submit("write", "the stop");
    const chunks: string[] = [];
    const events = (async () => {
      for await (const { event } of handle.events()) if ("artifactUpdate" in event) chunks.push(textOf({ parts: event.artifactUpdate.artifact.parts } as never));
    })();
    await eventually(() => chunks.length >= 1, 15_000);
    up.child.kill("SIGTERM");
    const task = await handle.result({ timeout: 30_000 });
    await events;
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(chunks).toHaveLength(5);
    expect(await up.exited).toBe(0);

    // The demo grant is gone with it: default-deny again.
    await eventually(() => !user.acl.allows(user.id, echoId, "echo") && user.acl.policy().rules.size === 0, 10_000);
  }, 90_000);

  it("a second signal while draining exits at once", async () => {
    const up = startUp(["--demo", "--nats", nats.server.url, "--tenant", "uptwice"]);
    await ready(up);
    const user = await open({ tenant: "uptwice", presenceMaxAgeMs: undefined, identity: Identity.fromFile(join(up.dir, ".agentbus", "demo-user.seed")) });
    await eventually(() => user.discover({ name: "writer", online: true }).length === 1, 15_000);
    const handle = await user.submit("write", "a long story");
    await eventually(async () => (await handle.get()).status.state === "TASK_STATE_WORKING", 15_000);
    up.child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 500)); // past the window in which a repeat is the same signal
    const at = Date.now();
    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(130);
    expect(Date.now() - at).toBeLessThan(2_000); // not the writer's remaining seconds
  }, 90_000);

  it("runs the agent modules and MCP servers its configuration names", async () => {
    const writer = fileURLToPath(new URL("../../agents/writer.ts", import.meta.url));
    const everything = createRequire(import.meta.url).resolve("@modelcontextprotocol/server-everything/dist/index.js");
    const config = { gateway: { open: true }, agents: [writer], mcp: { servers: { everything: { command: process.execPath, args: [everything] } } } };
    const up = startUp(["--nats", nats.server.url, "--tenant", "upconf"], { files: { "agentbus.config.json": JSON.stringify(config) } });
    const info = await ready(up);
    const watcher = await open({ tenant: "upconf", presenceMaxAgeMs: undefined });
    await eventually(() => watcher.discover({ capability: "write", online: true }).length === 1 && watcher.discover({ capability: "mcp.everything.get-sum", online: true }).length === 1, 20_000);
    // Both are reachable through the gateway's A2A cards.
    const gatewayCard = (await (await fetch(`${info.url}/.well-known/agent-card.json`)).json()) as { skills: Array<{ id: string }> };
    expect(gatewayCard.skills.map((s) => s.id)).toEqual(expect.arrayContaining(["write", "mcp.everything.get-sum"]));
    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(0);
  }, 90_000);

  it("secured embedded server: agent modules and API keys are issued; a grant signed with the admin seed opens a key; tenant create reloads up's server", async () => {
    const nowhere = `nats://127.0.0.1:${await freePort()}`;
    const writer = fileURLToPath(new URL("../../agents/writer.ts", import.meta.url));
    const config = { nats: { localUrl: nowhere }, agents: [writer], gateway: { keysFile: "keys.json" } };
    const up = startUp([], { files: { "agentbus.config.json": JSON.stringify(config), "keys.json": JSON.stringify([{ name: "ci", sha256: hashApiKey("ci-key") }]) } });
    const info = await ready(up);
    expect(info).toMatchObject({ natsSource: "embedded", secure: true });
    const keyId = info.keys!.ci!;
    const data = join(up.dir, ".agentbus");
    const cli = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [main, ...args], { cwd: up.dir });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (d) => (stdout += String(d)));
        child.stderr.on("data", (d) => (stderr += String(d)));
        child.on("exit", (code) => resolve({ code, stdout, stderr }));
      });
    const send = async () => {
      const res = await fetch(`${info.url}/a2a/writer`, {
        method: "POST",
        headers: { "content-type": "application/json", "A2A-Version": "1.0", "X-API-Key": "ci-key" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "SendMessage", params: { message: { messageId: `m-${Math.random()}`, role: "ROLE_USER", parts: [{ text: "the sea" }] } } }),
      });
      return ((await res.json()) as { result?: { task: { status: { state: string } } } }).result?.task.status.state;
    };
    // The module's agent runs under an issued identity; the key is refused until the tenant admin grants it.
    await eventually(async () => (await fetch(`${info.url}/ready`)).status === 200, 15_000);
    expect(await send()).toBe("TASK_STATE_FAILED");
    const allowed = await cli(["acl", "allow", "ci-write", keyId, "*", "write", "--nats", info.nats, "--admin-seed", join(data, "admin.seed")]);
    expect(allowed.code, allowed.stderr).toBe(0);
    await eventually(async () => (await send()) === "TASK_STATE_COMPLETED", 20_000);

    // The authority directory is the data dir's; its server is the one up recorded (no --nats needed).
    const created = await cli(["tenant", "create", "acme", "--dir", join(data, "authority"), "--json"]);
    expect(created.code, created.stderr).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ tenant: "acme", reloaded: true });
    const listed = await cli(["identity", "ls", "--dir", join(data, "authority"), "--tenant", "default", "--json"]);
    const roles = Object.fromEntries((JSON.parse(listed.stdout) as Array<{ id: string; role: string }>).map((r) => [r.id, r.role]));
    expect(roles[keyId]).toBe("bridge");
    expect(roles[info.gateway]).toBe("bridge");
    expect(Object.values(roles).filter((r) => r === "agent")).toHaveLength(1);

    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(0);
  }, 120_000);

  it("an invalid configuration fails at start with every problem and its path", async () => {
    const up = startUp([], {
      files: { "agentbus.config.yaml": ["tenant: Not A Tenant", "demo: maybe", "gateway:", "  rateLimit: { max: 0 }", "  colour: blue", "nats:", "  url: http://wrong"].join("\n") },
    });
    expect(await up.exited).toBe(2);
    const err = up.stderr();
    expect(err).toContain("agentbus.config.yaml");
    for (const problem of ["/tenant must match pattern", "/demo must be boolean", "/gateway/rateLimit/max must be >= 1", "/gateway/rateLimit must have required property 'timeWindowMs'", "/gateway must NOT have additional properties (colour)", "/nats/url must match pattern"]) {
      expect(err).toContain(problem);
    }
  }, 30_000);

  it("refuses to serve without authentication unless told to", async () => {
    const up = startUp(["--nats", nats.server.url]);
    expect(await up.exited).toBe(2);
    expect(up.stderr()).toMatch(/keysFile .* or open: true/);
  }, 30_000);

  it("open mode (and the demo without keys) refuses a non-loopback listen address; loopback starts", async () => {
    for (const args of [["--open", "--host", "0.0.0.0"], ["--demo", "--host", "0.0.0.0"], ["--open", "--host", "::"]]) {
      const up = startUp(["--nats", nats.server.url, ...args]);
      expect(await up.exited, args.join(" ")).toBe(2);
      expect(up.stderr()).toMatch(/is not a loopback address: open mode .* listens on 127\.0\.0\.1, ::1 or localhost only/);
    }
    const up = startUp(["--nats", nats.server.url, "--tenant", "uploop", "--open", "--host", "localhost"]);
    const info = await ready(up);
    expect((await fetch(`${info.url}/health`)).status).toBe(200);
    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(0);
  }, 60_000);

  it("an API key without seedFile keeps its identity across restarts; once granted, calls through it succeed", async () => {
    const agentBus = await open({ tenant: "upkeys", presenceMaxAgeMs: undefined });
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    await adminFor(agentBus); // the tenant's trust root, which up's connections take
    const files = { "keys.json": JSON.stringify([{ name: "ci", sha256: hashApiKey("ci-key") }]) };
    const call = async (url: string) => {
      const res = await fetch(`${url}/a2a/echo`, {
        method: "POST",
        headers: { "content-type": "application/json", "A2A-Version": "1.0", "X-API-Key": "ci-key" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "SendMessage", params: { message: { messageId: `m-${Math.random()}`, role: "ROLE_USER", parts: [{ text: "hi" }] } } }),
      });
      return (await res.json()) as { result?: { task: { status: { state: string }; artifacts: Array<{ parts: Array<{ text?: string }> }> } } };
    };

    const first = startUp(["--nats", nats.server.url, "--tenant", "upkeys", "--keys", "keys.json"], { files });
    const info = await ready(first);
    const id = info.keys!.ci!;
    expect(id).toMatch(/^U[A-Z0-9]{55}$/);
    const seed = join(first.dir, ".agentbus", "keys", "ci.seed");
    expect(Identity.fromFile(seed).id).toBe(id);
    expect(statSync(seed).mode & 0o777).toBe(0o600);
    expect(first.stderr()).toContain(`new identity for API key ci: ${id}`);
    // Not granted yet: the agent refuses the key's identity.
    await eventually(async () => (await fetch(`${info.url}/ready`)).status === 200);
    const refused = await call(info.url);
    expect(refused.result?.task.status.state).toBe("TASK_STATE_FAILED");
    expect(JSON.stringify(refused.result?.task.status)).toContain(`UNKNOWN_SENDER: sender ${id}`);
    await grant(agentBus, "ci-echo", { source: id, target: agentBus.id, capabilities: ["echo"] }, agentBus);
    const granted = await call(info.url);
    expect(granted.result?.task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(granted.result?.task.artifacts[0]?.parts[0]?.text).toBe("echo: hi");
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);

    // Same data dir: same identity, not announced again, still granted.
    const second = startUp(["--nats", nats.server.url, "--tenant", "upkeys", "--keys", "keys.json"], { dir: first.dir });
    const again = await ready(second);
    expect(again.keys!.ci).toBe(id);
    expect(second.stderr()).not.toContain("new identity for API key");
    expect((await call(again.url)).result?.task.status.state).toBe("TASK_STATE_COMPLETED");
    second.child.kill("SIGTERM");
    expect(await second.exited).toBe(0);
  }, 90_000);

  it("gateway.oidc: bearer JWTs act as the identity kept in <data-dir>/oidc.seed", async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256" }] };
    const idp = createServer((req, res) => {
      const body = req.url === "/.well-known/openid-configuration" ? { issuer: iss, jwks_uri: `${iss}/jwks` } : req.url === "/jwks" ? jwks : undefined;
      res.writeHead(body ? 200 : 404, { "content-type": "application/json" }).end(JSON.stringify(body ?? {}));
    });
    await new Promise<void>((resolve) => idp.listen(0, "127.0.0.1", resolve));
    const iss = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;
    try {
      const agentBus = await open({ tenant: "upoidc", presenceMaxAgeMs: undefined });
      await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
      await adminFor(agentBus);
      const up = startUp(["--nats", nats.server.url, "--tenant", "upoidc"], { files: { "agentbus.config.json": JSON.stringify({ gateway: { oidc: { issuer: iss, audience: "agentbus" } } }) } });
      const info = (await ready(up)) as Awaited<ReturnType<typeof ready>> & { oidc: string };
      expect(Identity.fromFile(join(up.dir, ".agentbus", "oidc.seed")).id).toBe(info.oidc);
      expect(up.stderr()).toContain(`new identity for OIDC callers: ${info.oidc}`);
      await grant(agentBus, "oidc-echo", { source: info.oidc, target: agentBus.id, capabilities: ["echo"] }, agentBus);
      const token = await new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(iss).setAudience("agentbus").setSubject("carol").setExpirationTime("5m").sign(privateKey);
      const post = (authorization: string) =>
        fetch(`${info.url}/a2a/echo`, {
          method: "POST",
          headers: { "content-type": "application/json", "A2A-Version": "1.0", authorization },
          body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "SendMessage", params: { message: { messageId: "o1", role: "ROLE_USER", parts: [{ text: "via oidc" }] } } }),
        });
      const ok = (await (await post(`Bearer ${token}`)).json()) as { result: { task: { status: { state: string } } } };
      expect(ok.result.task.status.state).toBe("TASK_STATE_COMPLETED");
      expect((await post(`Bearer ${token.slice(0, -4)}AAAA`)).status).toBe(401);
      up.child.kill("SIGTERM");
      expect(await up.exited).toBe(0);
    } finally {
      idp.closeAllConnections();
      await new Promise((resolve) => idp.close(resolve));
    }
  }, 60_000);
});
