import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Identity } from "../../core/index.js";
import { useNatsServer } from "../helpers/nats.js";
import { runCli, scratch } from "./helpers.js";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };

// Each command is a fresh Node process compiling TypeScript (1–3 s on a loaded machine).
describe("agentbus: version, id, exit codes, fast failures", { timeout: 90_000 }, () => {
  const nats = useNatsServer();
  // A real HTTP server: what `--nats` must not be mistaken for.
  let http: Server;
  let httpPort = 0;
  beforeAll(async () => {
    http = createServer((_req, res) => res.writeHead(200, { "content-type": "text/plain" }).end("an HTTP server\n"));
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
    httpPort = (http.address() as AddressInfo).port;
  });
  afterAll(async () => {
    http.closeAllConnections();
    await new Promise((resolve) => http.close(resolve));
  });

  it("--version and -V print the package version", async () => {
    for (const flag of ["--version", "-V"]) {
      const r = await runCli([flag]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${pkg.version}\n`);
    }
  });

  it("id prints a seed file's identity id; a missing or invalid file exits 2", async () => {
    const dir = scratch();
    const identity = Identity.generate();
    identity.writeSeed(join(dir, "me.nk"));
    const r = await runCli(["id", "me.nk"], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${identity.id}\n`);
    expect(JSON.parse((await runCli(["id", join(dir, "me.nk"), "--json"])).stdout)).toEqual({ id: identity.id, file: join(dir, "me.nk") });
    const missing = await runCli(["id", join(dir, "nope.nk")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`${join(dir, "nope.nk")}: no such file`);
    writeFileSync(join(dir, "bad.nk"), "not a seed\n");
    const bad = await runCli(["id", join(dir, "bad.nk")]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("no nkey user seed");
    expect(bad.stdout).toBe("");
  });

  it("usage errors exit 2 before anything connects: seed files, tenant, log level, numbers, config files", async () => {
    const dir = scratch();
    writeFileSync(join(dir, "bad.nk"), "SUAAAA\n");
    const on = ["--nats", nats.server.url];
    const cases: Array<[string[], RegExp, Record<string, string>?]> = [
      [["ls", ...on, "--seed", join(dir, "nope.nk")], /--seed .*nope\.nk: no such file/],
      [["ls", ...on, "--seed", join(dir, "bad.nk")], /--seed .*bad\.nk: no nkey user seed found/],
      [["ls", ...on, "--tenant", "Not A Tenant"], /--tenant "Not A Tenant" is not a tenant name/],
      [["ls", ...on], /AGENTBUS_TENANT "ACME" is not a tenant name/, { AGENTBUS_TENANT: "ACME" }],
      [["ls", ...on, "--log-level", "loud"], /argument 'loud' is invalid\. Allowed choices are fatal, error, warn, info, debug, trace, silent/],
      [["ls", ...on], /AGENTBUS_LOG_LEVEL "loud" is not a log level/, { AGENTBUS_LOG_LEVEL: "loud" }],
      [["ls", ...on], /not a valid nkey seed/, { AGENTBUS_SEED: "SUNOTASEED" }],
      [["acl", "allow", "r", "*", "*", "echo", ...on, "--admin-seed", join(dir, "nope.nk")], /--admin-seed .*nope\.nk: no such file/],
      [["call", "echo", "hi", ...on, "--timeout", "soon"], /--timeout must be a whole number/],
      [["gateway", "mcp", ...on, "--config", join(dir, "nope.yaml")], /--config .*nope\.yaml: no such file/],
      [["bridge", "a2a", ...on, "--keys", join(dir, "nope.json")], /--keys .*nope\.json: no such file/],
    ];
    const runs = await Promise.all(cases.map(([args, , env]) => runCli(args, { env })));
    cases.forEach(([args, message], i) => {
      expect(runs[i]!.code, `${args.join(" ")}\n${runs[i]!.stderr}`).toBe(2);
      expect(runs[i]!.stderr).toMatch(message);
    });
  }, 180_000);

  it("an address that is not a NATS URL exits 2 at once, naming the accepted forms", async () => {
    const forms = "give nats://host:port, tls://host:port or host:port";
    const http1 = await runCli(["ls", "--nats", `http://127.0.0.1:${httpPort}`]);
    expect(http1.code).toBe(2);
    expect(http1.stderr).toContain(`--nats http://127.0.0.1:${httpPort} is not a NATS server address: that is an HTTP address`);
    expect(http1.stderr).toContain(forms);
    const fromEnv = await runCli(["send", "write", "x"], { env: { NATS_URL: `https://127.0.0.1:${httpPort}` } });
    expect(fromEnv.code).toBe(2);
    expect(fromEnv.stderr).toContain(`NATS_URL https://127.0.0.1:${httpPort} is not a NATS server address`);
    const ws = await runCli(["ls", "--nats", "ws://127.0.0.1:8080"]);
    expect(ws.code).toBe(2);
    expect(ws.stderr).toContain("websocket URLs are not supported");
  });

  it("a nats:// address where an HTTP server (or nothing) listens exits 3, found by the greeting check (not the client library's 20 s connect timeout)", async () => {
    // (At once: each waits out the greeting.)
    const addresses = [`nats://127.0.0.1:${httpPort}`, `127.0.0.1:${httpPort}`];
    const runs = await Promise.all(addresses.map((address) => runCli(["ls", "--nats", address])));
    for (const [i, address] of addresses.entries()) {
      const r = runs[i]!;
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toContain(`cannot connect to NATS at ${address}: 127.0.0.1:${httpPort} accepted the connection but did not greet as a NATS server`);
      expect(r.stderr).toContain("within 10 s");
    }
    const closed = await runCli(["task", "ls", "--nats", "nats://127.0.0.1:1"]);
    expect(closed.code).toBe(3);
    expect(closed.stderr).toContain("connection refused");
    // The authority's commands too (they reach the server as the authority's service user).
    const dir = scratch();
    expect((await runCli(["authority", "config", "--dir", join(dir, "auth")])).code).toBe(0);
    const authority = await runCli(["identity", "ls", "--dir", join(dir, "auth"), "--nats", `nats://127.0.0.1:${httpPort}`]);
    expect(authority.code, authority.stderr).toBe(3);
    expect(authority.stderr).toContain("did not greet as a NATS server within 10 s");
    expect((await runCli(["identity", "ls", "--dir", join(dir, "auth"), "--nats", `http://127.0.0.1:${httpPort}`])).code).toBe(2);
  });

  it("a NATS server given as host:port, or as several comma-separated URLs, is used", async () => {
    const port = new URL(nats.server.url).port;
    const r = await runCli(["ls", "--json", "--nats", `127.0.0.1:${port}`, "--tenant", "hostport"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
    const several = await runCli(["ls", "--json", "--tenant", "hostport"], { env: { NATS_URL: `nats://127.0.0.1:1,${nats.server.url}` } });
    expect(several.code, several.stderr).toBe(0);
    expect(JSON.parse(several.stdout)).toEqual([]);
  });
});
