/**
 * `agentbus up`: the one-command product. Chooses NATS (given, local, or an
 * embedded server, secured: one NATS account per tenant and identities
 * issued by an authority kept in the data dir), starts the HTTP gateway
 * (A2A, MCP, monitor, health, readiness, metrics), optionally the example
 * agents, agent modules and MCP servers, and stops all of it cleanly on
 * SIGINT/SIGTERM.
 */
import { createHash } from "node:crypto";
import { basename, join, resolve } from "node:path";
import { Command } from "commander";
import pretty from "pino-pretty";
import { AgentBusError, connect, createLogger, Identity, isAgentBusError, type Bus, type IdentityRole, type Logger } from "../core/index.js";
import { HUB_DOMAIN, startServer, type NatsServer } from "../nats/index.js";
import { probe } from "../nats/ready.js";
import { Authority, forgetServer, recordServer, startSecureNats, type SecureNats } from "../authority/index.js";
import { createGateway } from "../bridges/gateway/index.js";
import { callObserver } from "../bridges/metrics/index.js";
import { Registry } from "prom-client";
import { keySeedFile, oidcSeedFile, persistentIdentity } from "../bridges/http/index.js";
import { startMcpGateway } from "../adapters/mcp/index.js";
import { echoSpec, startEcho } from "../agents/echo.js";
import { startWriter, writerSpec } from "../agents/writer.js";
import { orchestratorSpec, startOrchestrator } from "../agents/orchestrator.js";
import { startCoder } from "../agents/coder.js";
import { ConfigError, loadUpConfig, type UpConfig, type UpFlags } from "./config.js";
import { loadAgentModule, startAgentModule, type AgentModule } from "./modules.js";
import { apiKeysFrom, Exit } from "./options.js";
import { ACCEPTED_FORMS } from "./nats-url.js";
import { DEFAULT_DATA_DIR, removeUpRecord, upRecordPath, writeUpRecord } from "./up-record.js";

/** Something running that must be stopped on the way out, in reverse start order. */
type Stop = () => Promise<unknown>;

/** The demo agents: each on its own connection (one agent per connection), with the capabilities it serves. */
const DEMO = [
  { name: "echo", serves: echoSpec.skills.map((s) => s.id), start: (bus: Bus) => startEcho(bus) },
  { name: "writer", serves: writerSpec.skills.map((s) => s.id), start: (bus: Bus) => startWriter(bus) },
  { name: "orchestrator", serves: orchestratorSpec.skills.map((s) => s.id), start: (bus: Bus) => startOrchestrator(bus) },
  { name: "coder", serves: ["code"], start: (bus: Bus) => startCoder(bus) },
] as const;

/** The NATS `up` runs on. */
interface UpNats {
  url: string;
  /** Federated and embedded: the URLs of each region's nodes. */
  regionUrls?: Record<string, string[]>;
  /** Embedded edge sites: the URL of each one's node. */
  edgeUrls?: Record<string, string>;
  source: "given" | "local" | "embedded";
  /** The embedded server, when one was started. */
  server?: NatsServer;
  /** The embedded server's authority, when it is secured. */
  secure?: SecureNats;
  stop(): Promise<void>;
}

export function up(): Command {
  return new Command("up")
    .description("run agentbus: NATS (given, local or embedded), the HTTP gateway (A2A, MCP, monitor, metrics) and, with --demo, the example agents")
    .option("--config <file>", "configuration file (default: agentbus.config.{json,yaml,yml} here)")
    .option("--nats <url>", `NATS server to use: ${ACCEPTED_FORMS} (env NATS_URL); default: a JetStream server on nats://127.0.0.1:4222, else an embedded one`)
    .option("--tenant <tenant>", "tenant (env AGENTBUS_TENANT)")
    .option("--region <name>", "the region this gateway and its agents run in (env AGENTBUS_REGION): shown in discovery; calls prefer it")
    .option("--regions <list>", "comma-separated regions of a federated bus (env AGENTBUS_REGIONS); embedded: a supercluster with one cluster per region, the demo agents in each")
    .option("--edges <list>", "with --regions, embedded: comma-separated edge sites (env AGENTBUS_EDGES), leaf nodes with their own JetStream domain linked to the first region, the demo's echo at each")
    .option("--port <port>", "HTTP port (env AGENTBUS_PORT; default 8080)")
    .option("--host <host>", "listen address (env AGENTBUS_HOST; default 127.0.0.1)")
    .option("--grpc-port <port>", "serve the A2A gRPC binding on this port too, on the same address (env AGENTBUS_GRPC_PORT)")
    .option("--keys <file>", "API keys file (env AGENTBUS_KEYS_FILE)")
    .option("--open", "no authentication on the gateway (local use only: loopback addresses)")
    .option("--allowed-hosts <list>", "comma-separated Host names to serve besides loopback and the base URL's (env AGENTBUS_ALLOWED_HOSTS; name, name:port, *.domain or *)")
    .option("--allowed-origins <list>", "comma-separated origins whose web pages may call the gateway (env AGENTBUS_ALLOWED_ORIGINS; e.g. https://app.example.com)")
    .option("--demo", "start the example agents (echo, writer, orchestrator, coder)")
    .option("--data-dir <dir>", "embedded NATS data, the identities, and up.json: where this up's NATS server is, for the other commands (env AGENTBUS_DATA_DIR; default ./.agentbus)")
    .option("--seed <file>", "nkey seed file of the gateway's identity (default <data-dir>/gateway.seed)")
    .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent (env AGENTBUS_LOG_LEVEL; default info)")
    .option("--json", "one JSON line when ready instead of the human summary")
    .addHelpText(
      "after",
      `
When ready, up records where it runs in <data-dir>/up.json (mode 0600,
removed when it stops): {nats, region?, regions?, url, tenant, pid, secure,
demo?: {seed, id}, started}. The other commands, run with the same data dir and given no
--nats (or NATS_URL), use its NATS server and tenant and, with --demo, act
as its demo user unless --seed says otherwise:

  agentbus up --demo
  agentbus send write "the sea"          # in another terminal, same directory

With --demo, the demo agents, the gateway and the demo user may call each
other: the ACL group and rule demo-<last 8 characters of the gateway's id>
(one per data dir, so several ups in one tenant keep their own), signed
with <data-dir>/admin.seed and removed on stop.

Exit codes: 0 stopped cleanly, 2 invalid configuration, 3 NATS not usable,
130 a second Ctrl-C.`,
    )
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

  const gatewayIdentity = Identity.fromFileOrCreate(config.seedFile ?? join(config.dataDir, "gateway.seed"));
  const keys = config.gateway.keysFile ? apiKeysFrom(config.gateway.keysFile, "gateway.keysFile") : [];
  let nats: UpNats;
  try {
    nats = await chooseUpNats(config, gatewayIdentity, [...new Set([config.tenant, ...keys.map((k) => k.tenant ?? config.tenant)])], log);
  } catch (err) {
    process.stderr.write(`agentbus up: ${(err as Error).message}\n`);
    process.exit(Exit.connection);
  }
  stops.push(() => nats.stop());
  log.info({ url: nats.url, source: nats.source, secure: Boolean(nats.secure) }, natsSentence(nats));

  try {
    // One registry: /metrics shows the fast calls of every connection here too.
    const registry = new Registry();
    const observer = callObserver(registry, { tenant: config.tenant });
    // Every connection authenticates with its identity's key: on the
    // secured embedded server the authority places it in its tenant's
    // account with its role's permissions; an open server ignores the key.
    // Federated: every connection says its region among the regions; with `region`, it connects to that region's nodes.
    // At an edge site (`edge`): the edge's node, its hub the first region.
    const open = (o: { name: string; identity?: Identity; region?: string; edge?: string }) =>
      connect({
        ...(o.edge
          ? { servers: nats.edgeUrls![o.edge]!, tenant: config.tenant, hub: { domain: HUB_DOMAIN, region: config.regions![0]! } }
          : { servers: (o.region && nats.regionUrls?.[o.region]) || nats.url, tenant: config.tenant, region: o.region ?? config.region, regions: config.regions }),
        name: `agentbus-up-${o.name}`, identity: o.identity, auth: { nkey: true }, logger: log.child({ component: o.name }), drainTimeoutMs: config.gateway.drainTimeoutMs, observer,
      });
    // On the secured embedded server each identity is issued first: its tenant and role.
    const authority = nats.secure?.authority;
    const issue = async (identity: Identity, role: IdentityRole, name: string, extra: { tenant?: string; serves?: string[] } = {}) => {
      if (authority) await ensureIssued(authority, { id: identity.id, tenant: extra.tenant ?? config.tenant, role, serves: extra.serves, name });
    };
    // The tenant admin of the demo and of `acl` commands, kept in the data dir; the authority issues it.
    const adminIdentity = Identity.fromFileOrCreate(join(config.dataDir, "admin.seed"));
    if (nats.secure) {
      await nats.secure.createTenant(config.tenant, adminIdentity);
      for (const t of new Set(keys.map((k) => k.tenant ?? config.tenant))) if (t !== config.tenant) await nats.secure.createTenant(t);
    }

    // The gateway acts for many callers and checks their rights itself; its
    // monitor and /metrics read the whole tenant (work submissions, task
    // events, the audit stream): the bridge role. It signs no policy: the
    // trust root is the tenant admin.
    await issue(gatewayIdentity, "bridge", "agentbus up gateway");
    const bus = await open({ name: "gateway", identity: gatewayIdentity });
    stops.push(() => bus.close());
    if (!bus.nc.info?.auth_required) process.stderr.write(openServerWarning(nats.url));

    // Each key acts as one identity across restarts: its seedFile, else one kept in the data dir.
    // Issued as a bridge: grants made while up runs apply to it at once (a
    // caller's permissions are fixed when it connects); the agents still
    // check each call against the ACL with the key's identity.
    const apiKeys = await Promise.all(
      keys.map(async (k) => {
        const identity = k.seedFile ? Identity.fromFile(k.seedFile) : kept(keySeedFile(config.dataDir, k.name), `API key ${k.name}`, log);
        await issue(identity, "bridge", `API key ${k.name}`, { tenant: k.tenant ?? config.tenant });
        const keyBus = await connect({ servers: nats.url, tenant: k.tenant ?? config.tenant, region: config.region, regions: config.regions, identity, auth: { nkey: true }, name: `agentbus-up-key-${k.name}`, logger: log });
        stops.push(() => keyBus.close());
        return { name: k.name, sha256: k.sha256, bus: keyBus };
      }),
    );
    // Bearer-JWT callers act as one identity, kept in the data dir; each is named oidc:<sub>.
    let oidc;
    if (config.gateway.oidc && !config.gateway.open) {
      const identity = kept(oidcSeedFile(config.dataDir), "OIDC callers", log);
      await issue(identity, "bridge", "OIDC callers");
      const oidcBus = await open({ name: "oidc", identity });
      stops.push(() => oidcBus.close());
      oidc = { ...config.gateway.oidc, bus: oidcBus };
    }

    // Agents stop before the gateway's connection (stops run in reverse), so
    // their in-flight tasks finish while the gateway still relays events.
    // They drain together: one stop for all.
    const agentBuses: Bus[] = [];
    // The demo grant goes after the agents have drained (their last tasks may still call each other).
    let demoAdmin: Bus | undefined;
    // This up's own group and rule: another up --demo in the tenant keeps its own.
    const demoAcl = demoAclName(bus.id);
    let demoUser: { seed: string; id: string } | undefined;
    if (config.demo) stops.push(async () => demoAdmin && revokeDemo(demoAdmin, demoAcl));
    stops.push(() => Promise.all(agentBuses.map((b) => b.close())));
    if (config.demo) {
      // Same identities every run: the registry keeps one entry per demo agent.
      const demoAgents = DEMO.map((demo) => ({ ...demo, identity: Identity.fromFileOrCreate(join(config.dataDir, "demo", `${demo.name}.seed`)) }));
      // The demo's callers: the gateway, and an identity for the CLI.
      const userSeed = resolve(config.dataDir, "demo-user.seed");
      const user = Identity.fromFileOrCreate(userSeed);
      demoUser = { seed: userSeed, id: user.id };
      for (const demo of demoAgents) await issue(demo.identity, "agent", `demo ${demo.name}`, { serves: [...demo.serves] });
      await issue(user, "caller", "demo user (CLI)");
      // The tenant admin signs the demo's grant, before the agents connect:
      // on the secured server an agent may call what it was granted when it connected.
      demoAdmin = await open({ name: "admin", identity: adminIdentity });
      const revision = await grantDemo(demoAdmin, demoAcl, [...demoAgents.map((d) => d.identity.id), bus.id, user.id], bus.id);
      if (authority && revision !== undefined) await (await authority.tenant(config.tenant)).acl.applied(revision);
      // Federated: one instance of each demo agent in every region.
      for (const region of config.regions ?? [undefined]) {
        for (const demo of demoAgents) {
          const agentBus = await open({ name: region ? `${demo.name}@${region}` : demo.name, identity: demo.identity, region });
          agentBuses.push(agentBus);
          await demo.start(agentBus);
        }
      }
      // Each edge site: its own echo, which serves the edge's echo work whether its link is up or not.
      for (const edge of config.edges ?? []) {
        const echo = demoAgents.find((d) => d.name === "echo")!;
        const agentBus = await open({ name: `echo@${edge}`, identity: echo.identity, edge });
        agentBuses.push(agentBus);
        await echo.start(agentBus);
      }
    }
    for (const module of config.agents) {
      const entry = await loadAgentModule(module);
      // One identity per module, kept in the data dir; issued for the card's skills (a module that is a function: any capability).
      const identity = Identity.fromFileOrCreate(moduleSeedFile(config.dataDir, module));
      await issue(identity, "agent", `agent module ${module}`, { serves: servesOf(entry) });
      const agentBus = await open({ name: module, identity });
      agentBuses.push(agentBus);
      const running = (await startAgentModule(agentBus, entry)) as { stop?: () => Promise<unknown> } | undefined;
      if (typeof running?.stop === "function") stops.push(() => running.stop!());
    }
    if (config.mcp) {
      const identity = Identity.fromFileOrCreate(join(config.dataDir, "mcp-gateway.seed"));
      await issue(identity, "agent", "MCP gateway", { serves: Object.keys(config.mcp.servers).map((name) => `mcp.${name}.>`) });
      const mcpBus = await open({ name: "mcp-gateway", identity });
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
      ...(config.gateway.grpcPort !== undefined && { grpc: { port: config.gateway.grpcPort, host: config.gateway.host } }),
    });
    const url = await app.listen({ host: config.gateway.host, port: config.gateway.port });
    stops.push(() => closeWithin(app, config.gateway.drainTimeoutMs, log));
    const base = config.gateway.baseUrl ?? url;
    // Where this up is, for the other commands run with the same data dir (removed first on stop).
    writeUpRecord(config.dataDir, {
      nats: nats.url, ...(config.regions && { region: config.region, regions: config.regions }), url, tenant: config.tenant, pid: process.pid, secure: Boolean(nats.secure),
      ...(demoUser && { demo: demoUser }), started: new Date().toISOString(),
    });
    stops.push(async () => removeUpRecord(config.dataDir));
    if (json) {
      const callers = { keys: Object.fromEntries(apiKeys.map((k) => [k.name, k.bus.id])), ...(oidc && { oidc: oidc.bus.id }) };
      process.stdout.write(`${JSON.stringify({ ready: true, url, nats: nats.url, ...(config.regions && { region: config.region, regions: nats.regionUrls ?? config.regions }), ...(nats.edgeUrls && { edges: nats.edgeUrls }), natsSource: nats.source, secure: Boolean(nats.secure), tenant: config.tenant, gateway: bus.id, demo: config.demo, open: config.gateway.open, ...(nats.secure && { authority: nats.secure.state.dir, admin: adminIdentity.id }), ...callers })}\n`);
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

function natsSentence(nats: UpNats): string {
  if (nats.source === "given") return `using NATS at ${nats.url}`;
  if (nats.source === "local") return `using the local NATS server at ${nats.url}`;
  const secured = nats.secure ? `, secured: tenants are accounts, identities issued by the authority in ${nats.secure.state.dir}` : ", WITHOUT authentication";
  return `started an embedded nats-server at ${nats.url} (data in ${nats.server?.storeDir}${secured}); it stops with agentbus`;
}

/** Said on stderr, whatever the log level, when the server lets anyone in. */
function openServerWarning(url: string): string {
  return [
    `agentbus up: WARNING: the NATS server at ${url} requires no authentication.`,
    `  Any process that can reach it can read every message on the bus, read and change every tenant's tasks,`,
    `  registry and policy, and act as any agent. For a secured bus, let agentbus up start its own server`,
    `  (no --nats or NATS_URL, nothing on ${DEFAULT_LOCAL}), or run nats-server with agentbus accounts`,
    `  (README, "Secure deployment": agentbus authority config, agentbus authority serve).`,
    ``,
  ].join("\n");
}

const DEFAULT_LOCAL = "nats://127.0.0.1:4222";

/**
 * The server to use: the one given (it must answer with JetStream), else a
 * JetStream server at the local address, else an embedded one started
 * here, secured (`startSecureNats`: one account per tenant, the authority
 * in `<data-dir>/authority` answering its auth callout). Probes
 * authenticate with the gateway's key, so a secured server that knows it
 * is usable too. A nats-server older than 2.10 (no auth callout) runs
 * embedded without authentication, said plainly on stderr.
 */
async function chooseUpNats(config: UpConfig, gateway: Identity, tenants: string[], log: Logger): Promise<UpNats> {
  const none = async () => {};
  const auth = { nkeySeed: gateway.exportSeed() };
  if (config.nats.url) {
    const url = config.nats.url;
    await probe({ url, auth, jetstream: true, timeoutMs: 3_000 }).catch((cause: Error) => {
      const refused = /authorization/i.test(cause.message) ? ` (it refused the gateway's identity ${gateway.id}: issue it there, role bridge)` : "";
      throw new Error(`NATS at ${url} is not usable (${cause.message})${refused}; agentbus needs a reachable server with JetStream`, { cause });
    });
    return { url, source: "given", stop: none };
  }
  const localUrl = config.nats.localUrl;
  // Federated without a server given: a supercluster of its own (a single local server has no regions).
  if (!config.regions && await probe({ url: localUrl, auth, jetstream: true, timeoutMs: 1_000 }).then(() => true, () => false)) return { url: localUrl, source: "local", stop: none };
  const server = { storeDir: join(config.dataDir, "nats"), port: config.nats.port, stopsItself: true };
  const dir = join(config.dataDir, "authority");
  if (config.regions) {
    // A supercluster on this machine: one single-node cluster per region, every node with the tenants' accounts.
    // Edge sites link to the first region, the hub, each with its own authority.
    const secure = await startSecureNats({ dir, tenants, regions: config.regions, edges: config.edges, logger: log });
    const regionUrls = Object.fromEntries(config.regions.map((r) => [r, secure.supercluster!.clusters[r]!.urls]));
    const edgeUrls = config.edges && Object.fromEntries(config.edges.map((e) => [e, secure.supercluster!.edges[e]!.server.url]));
    return { url: regionUrls[config.region ?? config.regions[0]!]![0]!, regionUrls, ...(edgeUrls && { edgeUrls }), source: "embedded", server: secure.server, secure, stop: () => secure.stop() };
  }
  try {
    const secure = await startSecureNats({ dir, tenants, server, logger: log });
    const pid = secure.server.pid;
    // Where `agentbus tenant create` finds the config file to rewrite and the process to reload.
    recordServer(dir, { kind: "launched", url: secure.server.url, pid, configFile: secure.server.configFile, port: secure.server.port, httpPort: secure.server.httpPort, storeDir: secure.server.storeDir });
    return {
      url: secure.server.url, source: "embedded", server: secure.server, secure,
      stop: async () => {
        forgetServer(dir, pid);
        await secure.stop();
      },
    };
  } catch (err) {
    if (!isAgentBusError(err, "SERVER_TOO_OLD")) throw err;
    process.stderr.write(`agentbus up: WARNING: ${err.message.split(";")[0]}: the embedded server runs without authentication. Install nats-server 2.10 or newer (scripts/system-deps.sh puts one in .agentbus/bin) for a secured one.\n`);
    const plain = await startServer(server);
    return { url: plain.url, source: "embedded", server: plain, stop: () => plain.stop("SIGTERM") };
  }
}

/**
 * Issues an identity in the authority's directory unless it already is,
 * with the same tenant, role and capabilities. An identity the operator
 * revoked (or rotated away) is not issued again: `DENIED`.
 */
async function ensureIssued(authority: Authority, r: { id: string; tenant: string; role: IdentityRole; serves?: string[]; name: string }): Promise<void> {
  const now = authority.directory.get(r.id);
  if (now?.revokedAt || now?.rotatedTo) {
    throw new AgentBusError("DENIED", `${r.name}: identity ${r.id} was ${now.revokedAt ? `revoked in the authority's directory (${now.reason ?? "revoked"})` : `rotated to ${now.rotatedTo}`}; give it a new key (remove its seed file to have one made)`);
  }
  const same = (a?: string[], b?: string[]) => JSON.stringify([...(a ?? [])].sort()) === JSON.stringify([...(b ?? [])].sort());
  if (now && now.tenant === r.tenant && now.role === r.role && same(now.serves, r.serves)) return;
  await authority.issue(r);
}

/** The capabilities a module's agent serves: its card's skills; a module that is a function may serve any. */
function servesOf(entry: AgentModule): string[] {
  return entry.kind === "definition" ? entry.spec.skills.map((s) => s.id) : [">"];
}

/** Where the identity of an agent module is kept: `<data-dir>/agents/<file name>-<hash of the module>.seed`. */
function moduleSeedFile(dataDir: string, module: string): string {
  const name = basename(module).replace(/[^A-Za-z0-9_-]/g, "_");
  return join(dataDir, "agents", `${name}-${createHash("sha256").update(module).digest("hex").slice(0, 8)}.seed`);
}

/**
 * The name of one up's demo group and rule: `demo-` and the last 8
 * characters of its gateway's id (one per data dir), so several `up --demo`
 * in one tenant each keep and remove their own.
 */
export function demoAclName(gatewayId: string): string {
  return `demo-${gatewayId.slice(-8)}`;
}

/**
 * The demo's members (its agents, the gateway, the CLI's demo identity) may
 * call each other: one group and one rule named `name` (this up's, see
 * {@link demoAclName}), signed by the demo's admin key
 * (`<data-dir>/admin.seed`, which becomes the tenant's trust root when the
 * tenant has none), removed again on stop, so the tenant goes back to
 * default-deny. A tenant whose root names other admins gets no demo grant.
 * The group and rule `demo` that earlier versions shared between all ups
 * are removed when their group names this up's gateway (left by this data
 * dir), and left alone otherwise.
 */
async function grantDemo(admin: Bus, name: string, members: string[], gatewayId: string): Promise<number | undefined> {
  if (admin.acl.admins().length === 0) await admin.acl.setTrustRoot([admin.id]);
  if (!admin.acl.admins().includes(admin.id)) {
    admin.log.warn({ admin: admin.id, admins: admin.acl.admins() }, "demo: the tenant's trust root names other admins; no demo grant (grant it with agentbus acl allow … --admin-seed <an admin's seed>)");
    return undefined;
  }
  await admin.acl.putGroup(name, members);
  const revision = await admin.acl.putRule(name, { source: `group:${name}`, target: `group:${name}`, capabilities: [">"] });
  const leftover = admin.acl.policy().groups.get(LEGACY_DEMO);
  if (leftover?.members.includes(gatewayId)) {
    if (admin.acl.policy().rules.has(LEGACY_DEMO)) await admin.acl.deleteRule(LEGACY_DEMO);
    await admin.acl.deleteGroup(LEGACY_DEMO);
  }
  admin.log.info({ members: members.length, rule: name }, `demo: the demo agents, the gateway and the demo CLI identity may call each other (ACL group and rule ${name}, signed by the demo admin key, removed on stop)`);
  return revision;
}

/** The demo group and rule of earlier versions, one for every up of a tenant. */
const LEGACY_DEMO = "demo";

async function revokeDemo(admin: Bus, name: string): Promise<void> {
  if (admin.acl.admins().includes(admin.id)) {
    await admin.acl.deleteRule(name);
    await admin.acl.deleteGroup(name);
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

/** How people run this command: `agentbus` when built, through tsx from source. */
const CLI = import.meta.url.endsWith(".ts") ? "npx tsx cli/main.ts" : "agentbus";

function summary(base: string, nats: UpNats, config: UpConfig): string {
  const auth = config.gateway.open ? "" : ` -H 'X-API-Key: <your key>'`;
  // Commands run here find this up in its data dir's up.json; elsewhere they are told where it is.
  const here = resolve(config.dataDir) === resolve(DEFAULT_DATA_DIR);
  const dataDir = here ? "" : ` --data-dir ${config.dataDir}`;
  const lines = [
    ``,
    `agentbus is up (tenant ${config.tenant}, ${natsSentence(nats)})`,
    ``,
    ...(config.regions ? [`  regions     ${config.regions.map((r) => `${r}${r === config.region ? " (gateway)" : ""} ${nats.regionUrls?.[r]?.join(",") ?? ""}`.trim()).join("   ")}`, ``] : []),
    ...(nats.edgeUrls ? [`  edges       ${Object.entries(nats.edgeUrls).map(([e, u]) => `${e} ${u}`).join("   ")}   (AGENTBUS_HUB_DOMAIN=${HUB_DOMAIN} AGENTBUS_HUB_REGION=${config.regions![0]})`, ``] : []),
    `  monitor     ${base}/monitor/`,
    `  A2A         ${base}/.well-known/agent-card.json   (per agent: ${base}/a2a/<agent>)`,
    `  MCP         ${base}/mcp`,
    `  health      ${base}/health   ${base}/ready   ${base}/metrics`,
    ``,
  ];
  if (nats.secure) {
    const dir = nats.secure.state.dir;
    lines.push(
      `Identities are issued by the authority in ${dir}; the tenant admin's seed is ${join(config.dataDir, "admin.seed")}:`,
      ``,
      `  ${CLI} identity issue --dir ${dir} --tenant ${config.tenant} --role caller --seed-out me.nk`,
      `  ${CLI} acl allow me <my id> '*' echo --admin-seed ${join(config.dataDir, "admin.seed")}${dataDir}`,
      ``,
    );
  }
  if (config.demo) {
    lines.push(
      `Demo agents: echo, writer, orchestrator, coder. Try:`,
      ``,
      `  curl -s ${base}/a2a/echo${auth} -H 'content-type: application/json' -H 'A2A-Version: 1.0' \\`,
      `    -d '{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER","parts":[{"text":"hello"}]}}}'`,
      ``,
      `  ${CLI} send write "the sea"${dataDir}      # as the demo user`,
      ``,
    );
  }
  lines.push(
    `Commands${here ? " run in this directory" : ""} use this bus (its NATS server, tenant${config.demo ? " and demo user" : ""}) unless told otherwise: it is recorded in ${upRecordPath(config.dataDir)}.`,
    `Ctrl-C drains and stops (twice: at once).`,
    ``,
  );
  return lines.join("\n");
}
