import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type Server } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { dataOf, textOf } from "../../core/index.js";
import { eventually, grant, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

const main = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));
const everything = createRequire(import.meta.url).resolve("@modelcontextprotocol/server-everything/dist/index.js");

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
});

/** Runs a long-lived CLI command; resolves with its first JSON line (it is serving then). */
async function serve(args: string[]): Promise<{ child: ChildProcess; ready: Record<string, unknown>; exited: Promise<number | null> }> {
  // --json before a `--`, after which everything belongs to the served program.
  const end = args.includes("--") ? args.indexOf("--") : args.length;
  const child = spawn(process.execPath, [main, ...args.slice(0, end), "--json", ...args.slice(end)]);
  children.push(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += String(d)));
  child.stderr!.on("data", (d) => (stderr += String(d)));
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  const line = await eventually(() => stdout.split("\n").find((l) => l.startsWith("{")), 30_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${stderr}`);
  });
  return { child, ready: JSON.parse(line!) as Record<string, unknown>, exited };
}

describe("agentbus agent http | agent cmd | gateway mcp", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  let http: Server | undefined;
  afterEach(() => void http?.close());

  it("agent cmd serves a capability with a program; stdin carries the input; SIGTERM stops it with exit 0", async () => {
    const caller = await open({ tenant: "cliad" });
    await grant(caller, "upper", { source: caller.id, target: "*", capabilities: ["upper"] });
    const { ready, child, exited } = await serve(["agent", "cmd", "upper", "--nats", nats.server.url, "--tenant", "cliad", "--", process.execPath, "-e", "process.stdin.on('data', (d) => process.stdout.write(String(d).toUpperCase()))"]);
    expect(ready.capability).toBe("upper");
    await eventually(() => caller.acl.allows(caller.id, String(ready.id), "upper") && caller.discover({ capability: "upper", online: true }).length === 1);
    const task = await (await caller.submit("upper", "shout this")).result();
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(task.artifacts.flatMap((a) => a.parts).map((p) => p.text ?? "").join("")).toBe("SHOUT THIS");
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  }, 60_000);

  it("agent http serves a capability with an HTTP endpoint and its headers", async () => {
    const seen: Array<{ auth?: string; body: string }> = [];
    http = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += String(d)));
      req.on("end", () => {
        seen.push({ auth: req.headers.authorization, body });
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ length: body.length }));
      });
    });
    await new Promise<void>((resolve) => http!.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(http.address() as { port: number }).port}/measure?token=secret`;
    const caller = await open({ tenant: "cliad" });
    await grant(caller, "measure", { source: caller.id, target: "*", capabilities: ["measure"] });
    const { ready } = await serve(["agent", "http", "measure", url, "--header", "Authorization: Bearer abc", "--nats", nats.server.url, "--tenant", "cliad"]);
    expect(JSON.stringify(ready)).not.toContain("secret");
    await eventually(() => caller.acl.allows(caller.id, String(ready.id), "measure") && caller.discover({ capability: "measure", online: true }).length === 1);
    const reply = await caller.call("measure", { text: "four" });
    expect(dataOf(reply)).toEqual({ length: JSON.stringify({ text: "four" }).length });
    expect(seen[0]!.auth).toBe("Bearer abc");
  }, 60_000);

  it("gateway mcp joins an MCP server from a config file; a bad config is a usage error", async () => {
    const dir = mkdtempSync(join(tmpdir(), "agentbus-gw-"));
    writeFileSync(join(dir, "gateway.yaml"), `servers:\n  everything:\n    command: ${process.execPath}\n    args: ["${everything}"]\n`);
    writeFileSync(join(dir, "bad.json"), JSON.stringify({ servers: { "Bad Name": { url: "ftp://x" } } }));
    const bad = spawn(process.execPath, [main, "gateway", "mcp", "--config", join(dir, "bad.json"), "--nats", nats.server.url]);
    let badErr = "";
    bad.stderr.on("data", (d) => (badErr += String(d)));
    expect(await new Promise((resolve) => bad.on("exit", resolve))).toBe(2);
    expect(badErr).toMatch(/invalid MCP gateway configuration/);

    const caller = await open({ tenant: "cliad" });
    await grant(caller, "mcp", { source: caller.id, target: "*", capabilities: ["mcp.everything.>"] });
    const { ready } = await serve(["gateway", "mcp", "--config", join(dir, "gateway.yaml"), "--nats", nats.server.url, "--tenant", "cliad"]);
    expect(ready.tools).toContain("mcp.everything.get-sum");
    await eventually(() => caller.acl.allows(caller.id, String(ready.id), "mcp.everything.get-sum") && caller.discover({ capability: "mcp.everything.get-sum", online: true }).length === 1);
    expect(textOf(await caller.call("mcp.everything.get-sum", { a: 2, b: 3 }))).toMatch(/5/);
  }, 60_000);
});
