/**
 * README.md's code blocks, as written (see ./readme.ts): the CLI against
 * `up --demo` on its embedded, secured server, the HTTP and command-line
 * agents beside it, the secure deployment walkthrough and the federated
 * `up` with an edge site.
 */
import { mkdtempSync, readFileSync, rmSync, statSync as stat, symlinkSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { compareVersions } from "../../core/index.js";
import { findNatsServer, natsServerVersion } from "../../nats/index.js";
import { block, freePort, PATH, root, runSh, start, stopGroup, waitFor, type Started } from "./readme.js";

describe("README.md code blocks: sessions", () => {
  const version = natsServerVersion(findNatsServer());

  let project: { dir: string; up: Started } | undefined;
  it("cli-session: the CLI against up --demo on its embedded, secured server, from the same directory", async () => {
    const dir = mkdtempSync(join(tmpdir(), "agentbus-readme-project-"));
    writeFileSync(join(dir, "agentbus.config.json"), JSON.stringify({ nats: { localUrl: "nats://127.0.0.1:1" } }));
    const port = await freePort();
    const up = start("bash", ["-c", "agentbus up --demo"], { cwd: dir, env: { PATH, AGENTBUS_PORT: String(port) } });
    project = { dir, up };
    await waitFor(up, (o) => o.includes("agentbus is up"), "agentbus up", 120_000);
    expect(up.stdout()).toMatch(/embedded/);
    const { exit, stdout, stderr } = await runSh(block("cli-session"), dir);
    expect(exit, stderr).toBe(0);
    const version = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version;
    const out = stdout.split("\n");
    expect(out[0]).toBe(version);
    for (const agent of ["echo", "writer", "orchestrator", "coder"]) expect(stdout).toContain(agent);
    expect(out).toContain("hi");
    expect(stdout).toMatch(/echo: hello\s*\n\s*write: /); // the orchestrator's combined answer
    expect(stderr).toContain("NO_RESPONDERS");
    expect(out).toContain("exit 1");
    expect(stdout).toContain("it is me");
    expect(stat(join(dir, "me.nk")).mode & 0o777).toBe(0o600);
  }, 180_000);

  it("http-and-command-agents: an HTTP endpoint and a program as capabilities, next to up --demo", async () => {
    // The HTTP endpoint the block names, on a free port.
    const { createServer: createHttpServer } = await import("node:http");
    const seen: string[] = [];
    const http = createHttpServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += String(d)));
      req.on("end", () => {
        seen.push(`${req.headers.authorization} ${body}`);
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ summary: "short" }));
      });
    });
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    const port = (http.address() as AddressInfo).port;
    try {
      const { exit, stdout, stderr } = await runSh(block("http-and-command-agents").replace("127.0.0.1:9000", `127.0.0.1:${port}`) + "kill $(jobs -p)\n", project!.dir, { T: "secret-t" });
      expect(exit, stderr).toBe(0);
      expect(stdout).toContain("HELLO");
      expect(stdout).toContain("short");
      expect(seen[0]).toMatch(/^Bearer secret-t /);
      expect(seen[0]).toContain("a long text");
    } finally {
      http.close();
      stopGroup(project!.up.child, "SIGINT");
      await project!.up.exited;
    }
  }, 120_000);

  it("secure-deployment: your own nats-server with the authority, a tenant, identities, a grant, a call, a revocation", async () => {
    const dir = mkdtempSync(join(tmpdir(), "agentbus-readme-secure-"));
    symlinkSync(join(root, "agents"), join(dir, "agents"));
    const port = await freePort();
    // The block's server listens on 4222, where the commands look by default: here, a free port, and NATS_URL says which.
    // "Each `&` line can be its own terminal": as there, the next step starts once the server, and then the authority, say they are ready.
    const ready: Record<string, string> = { "nats-server ": "Server is ready", "agentbus authority serve ": "authority answering" };
    let n = 0;
    const code = block("secure-deployment")
      .replace("listen: 127.0.0.1:4222", `listen: 127.0.0.1:${port}`)
      .split("\n")
      .map((line) => {
        const waitFor = Object.entries(ready).find(([start]) => line.startsWith(start))?.[1];
        if (!waitFor) return line;
        const log = `background-${++n}.log`;
        return `${line.replace(/&(\s*#.*)?$/, `> ${log} 2>&1 &`)}\nfor i in $(seq 300); do grep -q "${waitFor}" ${log} && break; sleep 0.2; done\ngrep -q "${waitFor}" ${log} || { echo "not ready: ${line.split(" ").slice(0, 3).join(" ")}" >&2; cat ${log} >&2; exit 9; }`;
      })
      .join("\n");
    expect(code).not.toContain("4222");
    expect(n).toBe(2);
    // After the block: alice is refused now.
    const after = `agentbus call echo "again" --tenant acme --seed alice.nk || echo "refused: $?"\nkill $(jobs -p)\n`;
    try {
      const { exit, stdout, stderr } = await runSh(code + after, dir, { NATS_URL: `nats://127.0.0.1:${port}` }, 150_000);
      expect(exit, `${stdout}\n${stderr}`).toBe(0);
      expect(stdout.split("\n")).toContain("hello");
      expect(stdout).toMatch(/refused: 3/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);

  it("federation-up: up --regions with an edge site, then the CLI in a region and at the edge", async () => {
    if (compareVersions(version, "2.10.0") < 0) return; // a registry per region needs 2.10
    const [first, ...rest] = block("federation-up").split("\n");
    const upCommand = first!; // the first line runs in a terminal of its own (its comment lines follow it)
    const session = rest.filter((l) => !l.startsWith("  #")).join("\n");
    const dir = mkdtempSync(join(tmpdir(), "agentbus-readme-federation-"));
    writeFileSync(join(dir, "agentbus.config.json"), JSON.stringify({ nats: { localUrl: "nats://127.0.0.1:1" } }));
    const up = start("bash", ["-c", upCommand], { cwd: dir, env: { PATH, AGENTBUS_PORT: String(await freePort()) } });
    try {
      await waitFor(up, (o) => o.includes("agentbus is up"), "agentbus up", 180_000);
      // The URLs it printed: "regions  east nats://…   west nats://…", "edges  shop nats://…".
      const printed = up.stdout();
      const url = (name: string) => new RegExp(`\\b${name} (nats://[^\\s,]+)`).exec(printed)?.[1];
      const west = url("west");
      const shop = url("shop");
      expect(west, printed).toBeDefined();
      expect(shop, printed).toBeDefined();
      const code = session.replace("<west's URL>", west!).replace("<shop's URL>", shop!);
      const { exit, stdout, stderr } = await runSh(code, dir, {}, 150_000);
      expect(exit, stderr).toBe(0);
      expect(stdout).toMatch(/east/);
      expect(stdout).toMatch(/west/);
      expect(stdout.match(/\bhi\b/g)?.length).toBeGreaterThanOrEqual(2);
      expect(stdout).toContain("the sea");
    } finally {
      stopGroup(up.child, "SIGINT");
      await up.exited;
    }
  }, 360_000);
});
