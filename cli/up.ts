/**
 * `agentbus up`: the one-command product. Chooses NATS (given, local, or an
 * embedded server), starts the HTTP gateway (A2A, MCP, monitor, health,
 * readiness, metrics), optionally the example agents, agent modules and MCP
 * servers, and stops all of it cleanly on SIGINT/SIGTERM.
 */
import { join } from "node:path";
import { Command } from "commander";
import pretty from "pino-pretty";
import { connect, createLogger, Identity, type Bus, type Logger } from "../core/index.js";
import { chooseNats, type ChosenNats } from "../nats/index.js";
import { createGateway } from "../bridges/gateway/index.js";
import { callObserver } from "../bridges/metrics/index.js";
import { Registry } from "prom-client";
import { readApiKeys } from "../bridges/a2a/keys.js";
import { keySeedFile, oidcSeedFile, persistentIdentity } from "../bridges/http/index.js";
import { startMcpGateway } from "../adapters/mcp/index.js";
import { startEcho } from "../agents/echo.js";
import { startWriter } from "../agents/writer.js";
import { startOrchestrator } from "../agents/orchestrator.js";
import { startCoder } from "../agents/coder.js";
import { ConfigError, loadUpConfig, type UpConfig, type UpFlags } from "./config.js";
import { loadAgentModule, startAgentModule } from "./modules.js";
import { Exit } from "./options.js";

/** Something running that must be stopped on the way out, in reverse start order. */
type Stop = () => Promise<unknown>;

/** The demo agents: each on its own connection (one agent per connection). */
const DEMO = [
  { name: "echo", start: (bus: Bus) => startEcho(bus) },
  { name: "writer", start: (bus: Bus) => startWriter(bus) },
  { name: "orchestrator", start: (bus: Bus) => startOrchestrator(bus) },
  { name: "coder", start: (bus: Bus) => startCoder(bus) },
] as const;

export function up(): Command {
  return new Command("up")
    .description("run agentbus: NATS (given, local or embedded), the HTTP gateway (A2A, MCP, monitor, metrics) and, with --demo, the example agents")
    .option("--config <file>", "configuration file (default: agentbus.config.{json,yaml,yml} here)")
    .option("--nats <url>", "NATS server to use (env NATS_URL); default: a JetStream server on nats://127.0.0.1:4222, else an embedded one")
    .option("--tenant <tenant>", "tenant (env AGENTBUS_TENANT)")
    .option("--port <port>", "HTTP port (env AGENTBUS_PORT; default 8080)")
    .option("--host <host>", "listen address (env AGENTBUS_HOST; default 127.0.0.1)")
    .option("--keys <file>", "API keys file (env AGENTBUS_KEYS_FILE)")
    .option("--open", "no authentication on the gateway (local use only: loopback addresses)")
    .option("--allowed-hosts <list>", "comma-separated Host names to serve besides loopback and the base URL's (env AGENTBUS_ALLOWED_HOSTS; name, name:port, *.domain or *)")
    .option("--allowed-origins <list>", "comma-separated origins whose web pages may call the gateway (env AGENTBUS_ALLOWED_ORIGINS; e.g. https://app.example.com)")
    .option("--demo", "start the example agents (echo, writer, orchestrator, coder)")
    .option("--data-dir <dir>", "embedded NATS data and the gateway's identity (default ./.agentbus)")
    .option("--seed <file>", "nkey seed file of the gateway's identity (default <data-dir>/gateway.seed)")
    .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent (env AGENTBUS_LOG_LEVEL; default info)")
    .option("--json", "one JSON line when ready instead of the human summary")
    .action(async (flags: UpFlags & { json?: boolean }) => {
      let config: UpConfig;
      try {
        config = loadUpConfig(flags).config;
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        process.stderr.write(`agentbus up: ${err.message}\n`);
        process.exit(Exit.usage);
      }
      await run(config, Boolean(flags.json));
    });
}

async function run(config: UpConfig, json: boolean): Promise<void> {
  // Pretty logs for people at a terminal, JSON lines for everything else.
  const log = createLogger({ level: config.logLevel }, process.stderr.isTTY ? pretty({ colorize: true, destination: 2 }) : (process.stderr as never));
  const stops: Stop[] = [];
  const stopAll = async () => {
    for (const stop of stops.splice(0).reverse()) await stop().catch((err: Error) => log.warn({ err: err.message }, "while stopping"));
  };
  // First signal: drain and exit 0. Second: exit at once. One Ctrl-C can
  // arrive twice (from the terminal, and relayed by a wrapper such as tsx
  // or npm), so a repeat within a moment is the same signal.
  let stopping: Promise<void> | undefined;
  let firstAt = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping && Date.now() - firstAt < 300) return;
    if (stopping) {
      log.warn({ signal }, "second signal: exiting now");
      process.exit(130);
    }
    firstAt = Date.now();
    log.info({ signal }, "stopping: draining requests and tasks");
    stopping = stopAll().then(() => process.exit(Exit.ok));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  let nats: ChosenNats;
  try {
    nats = await chooseNats({ url: config.nats.url, localUrl: config.nats.localUrl, dataDir: join(config.dataDir, "nats"), port: config.nats.port });
  } catch (err) {
    process.stderr.write(`agentbus up: ${(err as Error).message}\n`);
    process.exit(Exit.connection);
  }
  stops.push(() => nats.stop());
  log.info({ url: nats.url, source: nats.source }, natsSentence(nats));

  try {
    // One registry: /metrics shows the fast calls of every connection here too.
    const registry = new Registry();
    const observer = callObserver(registry, { tenant: config.tenant });
    const open = (o: { name: string; identity?: Identity }) =>
      connect({ servers: nats.url, tenant: config.tenant, name: `agentbus-up-${o.name}`, identity: o.identity, logger: log.child({ component: o.name }), drainTimeoutMs: config.gateway.drainTimeoutMs, observer });
    const bus = await open({ name: "gateway", identity: Identity.fromFileOrCreate(config.seedFile ?? join(config.dataDir, "gateway.seed")) });
    stops.push(() => bus.close());

    const keys = config.gateway.keysFile ? readApiKeys(config.gateway.keysFile) : [];
    // Each key acts as one identity across restarts: its seedFile, else one kept in the data dir.
    const apiKeys = await Promise.all(
      keys.map(async (k) => {
        const identity = k.seedFile ? Identity.fromFile(k.seedFile) : kept(keySeedFile(config.dataDir, k.name), `API key ${k.name}`, log);
        const keyBus = await connect({ servers: nats.url, tenant: k.tenant ?? config.tenant, identity, name: `agentbus-up-key-${k.name}`, logger: log });
        stops.push(() => keyBus.close());
        return { name: k.name, sha256: k.sha256, bus: keyBus };
      }),
    );
    // Bearer-JWT callers act as one identity, kept in the data dir; each is named oidc:<sub>.
    let oidc;
    if (config.gateway.oidc && !config.gateway.open) {
      const oidcBus = await open({ name: "oidc", identity: kept(oidcSeedFile(config.dataDir), "OIDC callers", log) });
      stops.push(() => oidcBus.close());
      oidc = { ...config.gateway.oidc, bus: oidcBus };
    }

    // Agents stop before the gateway's connection (stops run in reverse), so
    // their in-flight tasks finish while the gateway still relays events.
    // They drain together: one stop for all.
    const agentBuses: Bus[] = [];
    // The demo grant goes after the agents have drained (their last tasks may still call each other).
    let demoAdmin: Bus | undefined;
    if (config.demo) stops.push(async () => demoAdmin && revokeDemo(demoAdmin));
    stops.push(() => Promise.all(agentBuses.map((b) => b.close())));
    if (config.demo) {
      for (const demo of DEMO) {
        // Same identities every run: the registry keeps one entry per demo agent.
        const agentBus = await open({ name: demo.name, identity: Identity.fromFileOrCreate(join(config.dataDir, "demo", `${demo.name}.seed`)) });
        agentBuses.push(agentBus);
        await demo.start(agentBus);
      }
      const agentIds = agentBuses.map((b) => b.id);
      // The demo's callers: the gateway, and an identity for the CLI.
      const user = Identity.fromFileOrCreate(join(config.dataDir, "demo-user.seed"));
      // The tenant admin key of the demo, kept in the data dir: it signs the demo's grant.
      demoAdmin = await open({ name: "admin", identity: Identity.fromFileOrCreate(join(config.dataDir, "admin.seed")) });
      await grantDemo(demoAdmin, [...agentIds, bus.id, user.id]);
    }
    for (const module of config.agents) {
      const entry = await loadAgentModule(module);
      const agentBus = await open({ name: module });
      agentBuses.push(agentBus);
      const running = (await startAgentModule(agentBus, entry)) as { stop?: () => Promise<unknown> } | undefined;
      if (typeof running?.stop === "function") stops.push(() => running.stop!());
    }
    if (config.mcp) {
      const mcpBus = await open({ name: "mcp-gateway" });
      stops.push(() => mcpBus.close());
      const gateway = await startMcpGateway({ bus: mcpBus, ...config.mcp });
      stops.push(() => gateway.close());
    }

    const app = await createGateway({
      bus,
      registry,
      ...(config.gateway.open ? { open: true } : { apiKeys, oidc }),
      allowedHosts: config.gateway.allowedHosts,
      allowedOrigins: config.gateway.allowedOrigins,
      baseUrl: config.gateway.baseUrl,
      rateLimit: config.gateway.rateLimit,
    });
    const url = await app.listen({ host: config.gateway.host, port: config.gateway.port });
    stops.push(() => closeWithin(app, config.gateway.drainTimeoutMs, log));
    const base = config.gateway.baseUrl ?? url;
    if (json) {
      const callers = { keys: Object.fromEntries(apiKeys.map((k) => [k.name, k.bus.id])), ...(oidc && { oidc: oidc.bus.id }) };
      process.stdout.write(`${JSON.stringify({ ready: true, url, nats: nats.url, natsSource: nats.source, tenant: config.tenant, gateway: bus.id, demo: config.demo, open: config.gateway.open, ...callers })}\n`);
    } else {
      process.stdout.write(summary(base, nats, config));
    }
    await new Promise<never>(() => {}); // until a signal
  } catch (err) {
    // A failure while starting: undo what was started, then report it.
    if (!stopping) await stopAll();
    throw err;
  }
}

/**
 * The identity kept in `file`, created on first use; a new one is logged
 * once (at warn level, so it shows at every usual log level) with its id,
 * for the operator to grant it rights.
 */
function kept(file: string, who: string, log: Logger): Identity {
  const { identity, created } = persistentIdentity(file);
  if (created) {
    log.warn({ id: identity.id, file }, `new identity for ${who}: ${identity.id} (kept in ${file}); grant it, e.g. agentbus acl allow <rule> ${identity.id} <target> <capabilities...>`);
  }
  return identity;
}

function natsSentence(nats: ChosenNats): string {
  if (nats.source === "given") return `using NATS at ${nats.url}`;
  if (nats.source === "local") return `using the local NATS server at ${nats.url}`;
  return `started an embedded nats-server at ${nats.url} (data in ${nats.server?.storeDir}); it stops with agentbus`;
}

/**
 * The demo's members (its agents, the gateway, the CLI's demo identity) may
 * call each other: one group and one rule, signed by the demo's admin key
 * (`<data-dir>/admin.seed`, which becomes the tenant's trust root when the
 * tenant has none), removed again on stop, so the tenant goes back to
 * default-deny. A tenant whose root names other admins gets no demo grant.
 */
async function grantDemo(admin: Bus, members: string[]): Promise<void> {
  if (admin.acl.admins().length === 0) await admin.acl.setTrustRoot([admin.id]);
  if (!admin.acl.admins().includes(admin.id)) {
    admin.log.warn({ admin: admin.id, admins: admin.acl.admins() }, "demo: the tenant's trust root names other admins; no demo grant (grant it with agentbus acl allow … --admin-seed <an admin's seed>)");
    return;
  }
  await admin.acl.putGroup("demo", members);
  await admin.acl.putRule("demo", { source: "group:demo", target: "group:demo", capabilities: [">"] });
  admin.log.info({ members: members.length }, "demo: the demo agents, the gateway and the demo CLI identity may call each other (ACL rule 'demo', signed by the demo admin key, removed on stop)");
}

async function revokeDemo(admin: Bus): Promise<void> {
  if (admin.acl.admins().includes(admin.id)) {
    await admin.acl.deleteRule("demo");
    await admin.acl.deleteGroup("demo");
  }
  await admin.close();
}

/** Stops accepting, waits for in-flight requests (streams end as their tasks end), then cuts what is left. */
async function closeWithin(app: Awaited<ReturnType<typeof createGateway>>, ms: number, log: Logger): Promise<void> {
  const timer = setTimeout(() => {
    log.warn({ ms }, "requests still open after the drain timeout: closing their connections");
    app.server.closeAllConnections();
  }, ms);
  try {
    await app.close();
  } finally {
    clearTimeout(timer);
  }
}

function summary(base: string, nats: ChosenNats, config: UpConfig): string {
  const auth = config.gateway.open ? "" : ` -H 'X-API-Key: <your key>'`;
  const lines = [
    ``,
    `agentbus is up (tenant ${config.tenant}, ${natsSentence(nats)})`,
    ``,
    `  monitor     ${base}/monitor/`,
    `  A2A         ${base}/.well-known/agent-card.json   (per agent: ${base}/a2a/<agent>)`,
    `  MCP         ${base}/mcp`,
    `  health      ${base}/health   ${base}/ready   ${base}/metrics`,
    ``,
  ];
  if (config.demo) {
    lines.push(
      `Demo agents: echo, writer, orchestrator, coder. Try:`,
      ``,
      `  curl -s ${base}/a2a/echo${auth} -H 'content-type: application/json' -H 'A2A-Version: 1.0' \\`,
      `    -d '{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"hello"}]}}}'`,
      ``,
      `  npx tsx cli/main.ts send write "the sea" --nats ${nats.url} --tenant ${config.tenant} --seed ${join(config.dataDir, "demo-user.seed")}`,
      ``,
    );
  }
  lines.push(`Ctrl-C drains and stops (twice: at once).`, ``);
  return lines.join("\n");
}
