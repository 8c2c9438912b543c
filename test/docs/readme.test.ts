/**
 * README.md's code blocks, as written (see ./readme.ts): the library and
 * protocol examples, and `npm start` with what runs against it. The CLI
 * sessions, the secure deployment and the federated `up` are in
 * readme-sessions.test.ts.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { useNatsServer, useNatsSupercluster } from "../helpers/nats.js";
import { compareVersions, connect } from "../../core/index.js";
import { blocks, block, freePort, insideLibrary, lines, LOCAL_NATS, PATH, root, RUNNERS, runSh, runTs, start, startTs, stopGroup, waitFor, type Started } from "./readme.js";

describe("README.md code blocks", () => {
  const lib = useNatsServer();
  const federation = useNatsSupercluster({ regions: ["east", "west"], nodesPerRegion: 1 });

  it("every code block names its runner here, and every runner its block", () => {
    expect(blocks.filter((b) => b.name.startsWith("(unnamed")).map((b) => `${b.name} ${b.lang}`)).toEqual([]);
    expect(blocks.map((b) => b.name).sort()).toEqual([...RUNNERS].sort());
  });

  it("library: an agent and a caller, in one file; the library's logs stay off stdout", async () => {
    const { exit, stdout, stderr } = await runTs("library", block("library").replaceAll(JSON.stringify(LOCAL_NATS), JSON.stringify(lib.server.url)));
    expect(exit, stderr).toBe(0);
    const out = lines(stdout);
    expect(out[0]).toBe("hello, Ada");
    expect(out.some((l) => l.includes("hello, Grace"))).toBe(true);
    expect(out.at(-1)).toContain("TASK_STATE_COMPLETED");
    expect(out.filter((l) => l.startsWith('{"level"'))).toEqual([]);
  }, 60_000);

  it("library-schemas: schemas, discovery and errors, with the agent and caller of the first block", async () => {
    // The fragment's caller is granted math.add like the first block grants greet.
    const grant = `await agent.acl.applied(await policy.acl.putRule("caller-math", { source: caller.id, target: "*", capabilities: ["math.add"] }));\n`;
    const { exit, stdout, stderr } = await runTs("library-schemas", insideLibrary(grant + block("library-schemas")).replaceAll(JSON.stringify(LOCAL_NATS), JSON.stringify(lib.server.url)));
    expect(exit, stderr).toBe(0);
    const out = lines(stdout);
    expect(out.slice(-3)).toEqual(["{ sum: 5 }", "[ 'math' ]", "INVALID_INPUT"]);
  }, 60_000);

  it("library-tasks: a durable multi-turn task, replayed, listed", async () => {
    const grant = `await agent.acl.applied(await policy.acl.putRule("caller-write", { source: caller.id, target: "*", capabilities: ["write"] }));\n`;
    const { exit, stdout, stderr } = await runTs("library-tasks", insideLibrary(grant + block("library-tasks")).replaceAll(JSON.stringify(LOCAL_NATS), JSON.stringify(lib.server.url)));
    expect(exit, stderr).toBe(0);
    const out = lines(stdout);
    const at = out.indexOf("TASK_STATE_INPUT_REQUIRED");
    expect(at, stdout).toBeGreaterThan(0);
    // Every event of the story, replayed from its first (stream sequences, rising): its states, its chunks, the result.
    expect(out[at + 1]).toBe("TASK_STATE_COMPLETED");
    const events = out.slice(at + 2, -1).map((l) => l.split(" "));
    expect(events.map(([, kind]) => kind), stdout).toEqual(["statusUpdate", "statusUpdate", "statusUpdate", "artifactUpdate", "artifactUpdate", "artifactUpdate", "artifactUpdate", "statusUpdate"]);
    const sequences = events.map(([seq]) => Number(seq));
    expect(sequences).toEqual([...sequences].sort((a, b) => a - b));
    expect(out.at(-1)).toBe("2");
  }, 60_000);

  it("scheduling: priorities, delays, fan-out, a recurring task", async () => {
    const { exit, stdout, stderr } = await runTs("scheduling", block("scheduling").replaceAll(JSON.stringify(LOCAL_NATS), JSON.stringify(lib.server.url)));
    expect(exit, stderr).toBe(0);
    expect(lines(stdout)).toEqual([
      "report on outage",
      "report on weekly",
      "report on red; report on blue",
      expect.stringMatching(/^nightly runs next at \d{4}-\d\d-\d\dT0[01]:30:00\.000Z$/),
    ]);
  }, 60_000);

  it("testing: a handler without NATS prints what its comments say", async () => {
    const { exit, stdout, stderr } = await runTs("testing", block("testing"));
    expect(exit, stderr).toBe(0);
    expect(lines(stdout)).toEqual(["TASK_STATE_COMPLETED summary of dragons: 3 facts about dragons", "3 [ 'lookup' ]"]);
  }, 60_000);

  it("a2a-bridge and a2a-bridge-curl: the bridge with an API key, called with curl", async () => {
    const port = await freePort();
    // The block's `bus` and `teamABus`, and an echo agent team A is granted.
    const prelude = `
import { connect as connectBus, Identity } from "agentbus-nats";
const admin = Identity.generate();
const tenant = { servers: ${JSON.stringify(lib.server.url)}, tenant: "bridge-demo", trustRoot: [admin.id] };
const [bus, teamABus, echoBus, policy] = await Promise.all([connectBus(tenant), connectBus(tenant), connectBus(tenant), connectBus({ ...tenant, identity: admin })]);
await echoBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => \`echo: \${ctx.text}\` });
await echoBus.acl.applied(await policy.acl.putRule("team-a", { source: teamABus.id, target: "*", capabilities: ["echo"] }));
while (bus.discover({ name: "echo", online: true }).length === 0) await new Promise((r) => setTimeout(r, 50));
`;
    const server = startTs("a2a-bridge", prelude + block("a2a-bridge").replace("port: 8080", `port: ${port}`) + `console.log("listening");\n`, { TEAM_A_KEY: "team-a-secret" });
    await waitFor(server, (o) => o.includes("listening"), "bridge");
    const card = (await (await fetch(`http://127.0.0.1:${port}/a2a/echo/.well-known/agent-card.json`, { headers: { "A2A-Version": "1.0" } })).json()) as { name: string; signatures?: unknown[] };
    expect(card.name).toBe("echo");
    expect(card.signatures?.length).toBe(1);
    const curl = await runSh(block("a2a-bridge-curl").replace("localhost:8080", `localhost:${port}`), root, { TEAM_A_KEY: "team-a-secret" });
    expect(curl.exit, curl.stderr).toBe(0);
    expect(curl.stdout).toContain("echo: hi");
    const refused = await runSh(block("a2a-bridge-curl").replace("localhost:8080", `localhost:${port}`), root, { TEAM_A_KEY: "wrong" });
    expect(refused.stdout).not.toContain("echo: hi");
    stopGroup(server.child);
  }, 90_000);

  it("a2a-over-nats: a verified card, a task through the SDK client", async () => {
    const { exit, stdout, stderr } = await runTs("a2a-over-nats", block("a2a-over-nats").replaceAll(JSON.stringify(LOCAL_NATS), JSON.stringify(lib.server.url)));
    expect(exit, stderr).toBe(0);
    expect(lines(stdout)).toEqual(["true"]);
  }, 60_000);

  // `npm start` as written (`npm ci` is what this run was installed with), on a test server, in a data dir and on a port of its own.
  const demoNats = useNatsServer();
  let demo: { up: Started; port: number; dataDir: string } | undefined;
  const demoEnv = () => ({ AGENTBUS_DATA_DIR: demo!.dataDir });
  const at8080 = (code: string) => code.replaceAll(":8080", `:${demo!.port}`);

  it("start: npm start runs agentbus up with the demo and records where its NATS is; ci: .ci/run runs the test command", async () => {
    expect(block("start")).toBe("npm ci && npm start\n");
    expect(readFileSync(join(root, ".ci/run"), "utf8")).toContain(`\n${block("ci")}`);
    const port = await freePort();
    const dataDir = join(mkdtempSync(join(tmpdir(), "agentbus-readme-")), ".agentbus");
    const up = start("npm", ["start"], { cwd: root, env: { NATS_URL: demoNats.server.url, AGENTBUS_DATA_DIR: dataDir, AGENTBUS_PORT: String(port) } });
    demo = { up, port, dataDir };
    await waitFor(up, (o) => o.includes("agentbus is up"), "agentbus up", 90_000);
    expect(up.stdout()).toContain(`http://127.0.0.1:${port}/monitor/`);
    const record = JSON.parse(readFileSync(join(dataDir, "up.json"), "utf8")) as { nats: string; tenant: string; demo?: { id: string } };
    expect(record).toMatchObject({ nats: demoNats.server.url, tenant: "default" });
    expect(record.demo?.id).toMatch(/^U[A-Z0-9]{55}$/);
  }, 120_000);

  it("try: the curl and the CLI's send against npm start", async () => {
    const { exit, stdout, stderr } = await runSh(at8080(block("try")), root, demoEnv());
    expect(exit, stderr).toBe(0);
    // curl prints the JSON-RPC answer without a newline; send's output follows it.
    const end = [...stdout.matchAll(/}/g)].map((m) => m.index! + 1).find((i) => {
      try {
        JSON.parse(stdout.slice(0, i));
        return true;
      } catch {
        return false;
      }
    });
    const reply = JSON.parse(stdout.slice(0, end)) as object;
    expect(reply).toMatchObject({ jsonrpc: "2.0", id: 1, result: { task: { status: { state: "TASK_STATE_COMPLETED" } } } });
    expect(JSON.stringify(reply)).toContain('"text":"hello"');
    expect(stdout.slice(end)).toContain("the sea");
  }, 90_000);

  it("a2a-client: the official A2A client streams a task from npm start's gateway", async () => {
    const { exit, stdout, stderr } = await runTs("a2a-client", at8080(block("a2a-client")));
    expect(exit, stderr).toBe(0);
    expect(stdout).toContain("artifactUpdate");
    expect(stdout).toContain("statusUpdate");
  }, 60_000);

  it("mcp-client: the official MCP client calls a tool with progress", async () => {
    const { exit, stdout, stderr } = await runTs("mcp-client", at8080(block("mcp-client")));
    expect(exit, stderr).toBe(0);
    expect(lines(stdout).length).toBeGreaterThan(0);
  }, 60_000);

  it("nats-cli: what each nats CLI command shows is there (the nats CLI has no Debian package: nats.js does each)", async () => {
    const commands = block("nats-cli").split("\n").filter(Boolean).map((l) => l.split("#")[0]!.trim());
    expect(commands).toEqual([
      "nats sub 'mesh.default.>'",
      "nats micro ls",
      "nats kv ls",
      "nats kv ls mesh_default_agents",
      "nats kv get mesh_default_tasks <submitter-id>.<task-id>",
      "nats stream view MESH_DEFAULT_EVENTS",
      "nats stream view MESH_DEFAULT_AUDIT",
      "nats consumer ls MESH_DEFAULT_WORK",
    ]);
    const { connect: natsConnect } = await import("@nats-io/transport-node");
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const { Kvm } = await import("@nats-io/kv");
    const { Svcm } = await import("@nats-io/services");
    const nc = await natsConnect({ servers: demoNats.server.url });
    try {
      // nats sub 'mesh.default.>': a call's traffic is on it.
      const seen: string[] = [];
      const sub = nc.subscribe("mesh.default.>", { callback: (_e, m) => void seen.push(m.subject) });
      const call = await runSh("agentbus call echo hi", root, demoEnv());
      expect(call.stdout).toBe("hi\n");
      await nc.flush();
      sub.unsubscribe();
      expect(seen.some((s) => /^mesh\.default\.agent\.U[A-Z0-9]+\.call\./.test(s)), seen.join(" ")).toBe(true);
      // nats micro ls: the demo agents as services, one endpoint per capability.
      const names: string[] = [];
      for await (const info of await new Svcm(nc).client().info()) names.push(info.name);
      expect(names).toEqual(expect.arrayContaining(["echo", "writer", "orchestrator"]));
      // nats kv ls, nats kv ls mesh_default_agents, nats kv get mesh_default_tasks <submitter-id>.<task-id>
      const kvm = new Kvm(nc);
      const buckets: string[] = [];
      for await (const b of kvm.list()) buckets.push(b.bucket);
      // The buckets its comment names: mesh_default_agents, _presence, …
      const named = /the buckets: (mesh_default_\w+(?:, _\w+)*)/.exec(block("nats-cli"))![1]!.split(", ").map((b) => (b.startsWith("_") ? `mesh_default${b}` : b));
      expect(named.length).toBeGreaterThanOrEqual(6);
      expect(buckets).toEqual(expect.arrayContaining(named));
      const agents = await kvm.open("mesh_default_agents");
      expect((await agents.keys().then(async (it) => { const k: string[] = []; for await (const x of it) k.push(x); return k; })).length).toBeGreaterThanOrEqual(4);
      const sent = await runSh('agentbus send echo "kept" --json --no-wait', root, demoEnv());
      const task = JSON.parse(lines(sent.stdout).at(-1)!) as { task?: { id: string }; id?: string };
      const taskId = task.task?.id ?? task.id!;
      const record = JSON.parse(readFileSync(join(demo!.dataDir, "up.json"), "utf8")) as { demo: { id: string } };
      const tasks = await kvm.open("mesh_default_tasks");
      expect((await tasks.get(`${record.demo.id}.${taskId}`))?.value.length).toBeGreaterThan(0);
      // nats stream view MESH_DEFAULT_EVENTS / MESH_DEFAULT_AUDIT, nats consumer ls MESH_DEFAULT_WORK
      const jsm = await jetstreamManager(nc);
      expect((await jsm.streams.info("MESH_DEFAULT_EVENTS")).state.messages).toBeGreaterThan(0);
      expect((await jsm.streams.info("MESH_DEFAULT_AUDIT")).config.name).toBe("MESH_DEFAULT_AUDIT");
      const consumers: string[] = [];
      for await (const c of jsm.consumers.list("MESH_DEFAULT_WORK")) consumers.push(c.name);
      expect(consumers).toEqual(expect.arrayContaining(["cap_echo", "cap_write"]));
    } finally {
      await nc.close();
    }
  }, 90_000);

  it("npm start stops on Ctrl-C and removes its record", async () => {
    stopGroup(demo!.up.child, "SIGINT");
    await demo!.up.exited;
    expect(demo!.up.stdout() + demo!.up.stderr()).not.toMatch(/error/i);
    expect(() => readFileSync(join(demo!.dataDir, "up.json"))).toThrow();
  }, 60_000);

  it("mcp-stdio-config: an MCP client spawns agentbus mcp as its config says, and lists the tenant's capabilities as tools", async () => {
    const config = JSON.parse(block("mcp-stdio-config").split("\n").filter((l) => !l.trim().startsWith("//")).join("\n")) as { mcpServers: { agentbus: { command: string; args: string[] } } };
    const { command, args } = config.mcpServers.agentbus;
    const dir = mkdtempSync(join(tmpdir(), "agentbus-readme-mcp-"));
    const env = { PATH, NATS_URL: lib.server.url };
    expect((await runSh("agentbus keygen me.nk", dir, env)).exit).toBe(0);
    const agentBus = await connect({ servers: lib.server.url, tenant: "acme", insecureAllowAll: true });
    await agentBus.agent({ name: "greeter-mcp", skills: [{ id: "greet.mcp" }] }, { "greet.mcp": (ctx) => `hello, ${ctx.text}` });
    const { Client } = await import("@modelcontextprotocol/sdk/client/index.js");
    const { StdioClientTransport } = await import("@modelcontextprotocol/sdk/client/stdio.js");
    const client = new Client({ name: "readme", version: "1.0.0" });
    try {
      await client.connect(new StdioClientTransport({ command, args, cwd: dir, env: { ...process.env, ...env } as Record<string, string>, stderr: "ignore" }));
      const until = Date.now() + 20_000;
      let tools: string[] = [];
      while (!tools.includes("greet.mcp") && Date.now() < until) {
        tools = (await client.listTools()).tools.map((t) => t.name);
        if (!tools.includes("greet.mcp")) await new Promise((r) => setTimeout(r, 200));
      }
      expect(tools).toContain("greet.mcp");
    } finally {
      await client.close();
      await agentBus.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("mcp-gateway-config: agentbus gateway mcp joins the configured servers' tools as capabilities; an unreachable one does not stop it", async () => {
    const yaml = block("mcp-gateway-config");
    const command = /^# gateway\.yaml — (agentbus gateway mcp --config gateway\.yaml)/.exec(yaml)![1]!;
    const dir = mkdtempSync(join(tmpdir(), "agentbus-readme-gw-"));
    writeFileSync(join(dir, "gateway.yaml"), yaml);
    // Run from this checkout, where `npx -y @modelcontextprotocol/server-everything` finds the installed package.
    const gateway = start("bash", ["-c", command.replace("gateway.yaml", join(dir, "gateway.yaml"))], { cwd: root, env: { PATH, NATS_URL: lib.server.url, SEARCH_TOKEN: "token" } });
    const bus = await connect({ servers: lib.server.url });
    try {
      const until = Date.now() + 60_000;
      while (bus.discover({ capability: "mcp.everything.echo", online: true }).length === 0) {
        if (Date.now() > until || gateway.child.exitCode !== null) throw new Error(`no mcp.everything.echo: ${gateway.stderr()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await bus.close();
      stopGroup(gateway.child);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);

  // `agentbus up --demo` in a project directory of its own: the embedded, secured server (no NATS given, none local).
  it("federation-library: one bus across two regions", async () => {
    if (compareVersions(federation.supercluster.servers[0]!.version, "2.10.0") < 0) return; // a registry per region needs 2.10
    const code = block("federation-library")
      .replace(JSON.stringify(LOCAL_NATS), JSON.stringify(federation.supercluster.clusters["east"]!.urls[0]))
      .replace('"nats://127.0.0.1:5222"', JSON.stringify(federation.supercluster.clusters["west"]!.urls[0]))
      .replaceAll("insecureAllowAll: true", `insecureAllowAll: true, auth: ${JSON.stringify(federation.supercluster.auth)}`);
    const { exit, stdout, stderr } = await runTs("federation-library", code, {}, 90_000);
    expect(exit, stderr).toBe(0);
    expect(lines(stdout)).toEqual(["west ran in west", "TASK_STATE_SUBMITTED", "east:0 west:1"]);
  }, 90_000);
});

