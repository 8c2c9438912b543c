import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { Identity } from "../../core/index.js";
import { useNatsServer } from "../helpers/nats.js";
import { testAdmin, useBuses } from "../helpers/bus.js";

const main = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [main, ...args]);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += String(d)));
    child.stderr.on("data", (d) => (stderr += String(d)));
    child.on("exit", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

// Each command is a fresh Node process compiling TypeScript (1–3 s on a loaded machine); a test runs up to eight.
describe("agentbus CLI", { timeout: 90_000 }, () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("keygen writes a 0600 seed file and prints the id", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "agentbus-cli-")), "me.nk");
    const r = await run(["keygen", file, "--json"]);
    expect(r.code).toBe(0);
    const { id } = JSON.parse(r.stdout) as { id: string };
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(Identity.fromSeed(readFileSync(file, "utf8")).id).toBe(id);
    expect((await run(["keygen", file])).code).toBe(2);
  });

  it("ls and call reach a real agent; acl edits apply", async () => {
    const agent = await open({ tenant: "cli" });
    await agent.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `got ${ctx.text}` });
    const seedFile = join(mkdtempSync(join(tmpdir(), "agentbus-cli-")), "caller.nk");
    const { id } = JSON.parse((await run(["keygen", seedFile, "--json"])).stdout) as { id: string };
    const common = ["--nats", nats.server.url, "--tenant", "cli", "--seed", seedFile];

    const ls = await run(["ls", ...common, "--json", "--online"]);
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([expect.objectContaining({ name: "echo", capabilities: ["echo"], online: true })]);

    const denied = await run(["call", "echo", "hi", ...common]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain("UNKNOWN_SENDER");

    const adminSeed = join(mkdtempSync(join(tmpdir(), "agentbus-cli-")), "admin.nk");
    testAdmin.writeSeed(adminSeed);
    expect((await run(["acl", "trust", testAdmin.id, "--admin-seed", adminSeed, ...common])).code).toBe(0);
    expect((await run(["acl", "allow", "cli-caller", id, "*", "echo", "--admin-seed", adminSeed, ...common])).code).toBe(0);
    let ok = { code: -1, stdout: "", stderr: "" };
    for (let i = 0; i < 20 && ok.code !== 0; i++) ok = await run(["call", "echo", "hi", ...common]);
    expect(ok.stdout.trim()).toBe("got hi");
  });

  it("task get and task cancel; cancelling a finished task fails with its code", async () => {
    const agent = await open({ tenant: "cli-tasks", insecureAllowAll: true });
    await agent.agent({ name: "waiter", skills: [{ id: "wait" }, { id: "echo" }] }, {
      wait: (ctx) => new Promise((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
      echo: (ctx) => ctx.text,
    });
    // The CLI acts as the submitter: only a task's parties may read or cancel it.
    const seedDir = mkdtempSync(join(tmpdir(), "agentbus-cli-"));
    agent.identity.writeSeed(join(seedDir, "submitter.nk"));
    const common = ["--nats", nats.server.url, "--tenant", "cli-tasks", "--seed", join(seedDir, "submitter.nk")];
    const running = await agent.submit("wait", "x");
    for (let i = 0; i < 50 && (await running.get()).status.state !== "TASK_STATE_WORKING"; i++) await new Promise((r) => setTimeout(r, 50));
    const cancelled = await run(["task", "cancel", running.id, "--json", ...common]);
    expect(cancelled.code).toBe(0);
    expect(JSON.parse(cancelled.stdout).status.state).toBe("TASK_STATE_CANCELED");
    const done = await agent.submit("echo", "hi");
    await done.result();
    const got = await run(["task", "get", done.id, "--json", ...common]);
    expect(JSON.parse(got.stdout).status.state).toBe("TASK_STATE_COMPLETED");
    const refused = await run(["task", "cancel", done.id, ...common]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("NOT_CANCELABLE");
  });

  it("bridge a2a serves agents with API keys from a validated keys file", async () => {
    const agentBus = await open({ tenant: "cli-bridge", insecureAllowAll: true });
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `got ${ctx.text}` });
    const dir = mkdtempSync(join(tmpdir(), "agentbus-cli-"));
    const { hashApiKey } = await import("../../bridges/a2a/index.js");
    const { writeFileSync } = await import("node:fs");
    writeFileSync(join(dir, "bad.json"), JSON.stringify([{ name: "x", sha256: "not-a-hash" }]));
    const bad = await run(["bridge", "a2a", "--keys", join(dir, "bad.json"), "--nats", nats.server.url, "--tenant", "cli-bridge"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/sha256.*must match pattern/);

    writeFileSync(join(dir, "keys.json"), JSON.stringify([{ name: "ci", sha256: hashApiKey("k-123") }]));
    const child = spawn(process.execPath, [main, "bridge", "a2a", "--keys", join(dir, "keys.json"), "--data-dir", join(dir, "data"), "--port", "0", "--json", "--nats", nats.server.url, "--tenant", "cli-bridge"]);
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = "";
        child.stdout.on("data", (d) => {
          out += String(d);
          const line = out.split("\n").find((l) => l.startsWith("{"));
          if (line) resolve((JSON.parse(line) as { url: string }).url);
        });
        child.on("exit", (code) => reject(new Error(`bridge exited ${code}`)));
      });
      const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "SendMessage", params: { message: { messageId: "c1", role: "ROLE_USER", parts: [{ text: "hi" }] } } });
      const post = (headers: Record<string, string>) => fetch(`${url}/a2a/echo`, { method: "POST", body, headers: { "content-type": "application/json", "A2A-Version": "1.0", ...headers } });
      expect((await post({})).status).toBe(401);
      let ok = "";
      for (let i = 0; i < 40 && !ok.includes("got hi"); i++) {
        ok = await (await post({ "X-API-Key": "k-123" })).text();
        if (!ok.includes("got hi")) await new Promise((r) => setTimeout(r, 100));
      }
      expect(ok).toContain("got hi");
      // The key without seedFile acts as an identity kept in the data dir (the same on the next start, so it can be granted).
      const kept = Identity.fromFile(join(dir, "data", "keys", "ci.seed"));
      const { existsSync } = await import("node:fs");
      expect(existsSync(join(dir, "data", "keys", "ci.seed"))).toBe(true);
      expect(kept.id).toMatch(/^U/);
    } finally {
      child.kill("SIGTERM");
    }
  });

  it("acl and revoke answer in JSON with --json; keygen accepts the common options", async () => {
    const adminSeed = join(mkdtempSync(join(tmpdir(), "agentbus-cli-")), "admin.nk");
    testAdmin.writeSeed(adminSeed);
    const target = Identity.generate().id;
    const unsigned = await run(["acl", "allow", "r1", "group:ops", target, "echo", "--nats", nats.server.url, "--tenant", "cli-json"]);
    expect(unsigned.code).toBe(2);
    expect(unsigned.stderr).toMatch(/--admin-seed/);
    const base = ["--nats", nats.server.url, "--tenant", "cli-json", "--json"];
    const common = [...base, "--admin-seed", adminSeed];
    expect(JSON.parse((await run(["acl", "trust", testAdmin.id, ...common])).stdout)).toEqual({ admins: [testAdmin.id] });
    const allow = await run(["acl", "allow", "r1", "group:ops", target, "echo", "math.>", ...common]);
    expect(allow.code, allow.stderr).toBe(0);
    expect(JSON.parse(allow.stdout)).toEqual({ rule: "r1", source: "group:ops", target, capabilities: ["echo", "math.>"] });
    expect(JSON.parse((await run(["acl", "group", "ops", target, ...common])).stdout)).toEqual({ group: "ops", members: [target] });
    expect(JSON.parse((await run(["acl", "ls", ...base])).stdout)).toEqual({
      admins: [testAdmin.id],
      rules: { r1: { source: "group:ops", target, capabilities: ["echo", "math.>"] } },
      groups: { ops: { members: [target] } },
      rotations: {},
    });
    expect(JSON.parse((await run(["acl", "rm", "r1", ...common])).stdout)).toEqual({ removed: "r1" });
    expect(JSON.parse((await run(["revoke", target, "--reason", "lost laptop", ...common])).stdout)).toEqual({ id: target, revoked: true });
    expect(JSON.parse((await run(["revoke", target, "--undo", ...common])).stdout)).toEqual({ id: target, revoked: false });
    const file = join(mkdtempSync(join(tmpdir(), "agentbus-cli-")), "k.nk");
    const key = await run(["keygen", file, ...base]);
    expect(key.code).toBe(0);
    expect(JSON.parse(key.stdout)).toEqual({ id: expect.stringMatching(/^U/), file });
  });

  it("exit codes: 2 for usage errors, 3 when NATS is unreachable", async () => {
    expect((await run(["call"])).code).toBe(2);
    expect((await run(["no-such-command"])).code).toBe(2);
    const r = await run(["ls", "--nats", "nats://127.0.0.1:1"]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/cannot connect to NATS/);
    expect((await run(["--help"])).code).toBe(0);
  });

  it("with --json an error is one JSON line on stderr, with its code", async () => {
    const r = await run(["task", "get", "no-such-task", "--json", "--nats", nats.server.url, "--tenant", "clijson"]);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stderr.trim().split("\n").at(-1)!)).toEqual({ error: { code: "TASK_NOT_FOUND", message: expect.stringContaining("no-such-task") } });
  });
});
