import { Command } from "commander";
import { existsSync } from "node:fs";
import { PassThrough } from "node:stream";
import { AgentBusError, Identity, isAgentBusError, proveRotation, type ConnectOptions, type EdgeView, type RegionView, type Task, type Topology, type TaskState } from "../core/index.js";
import { apiKeysFrom, busFrom, Exit, identityFromFile, isConnectionFailure, parseInput, print, progress, targetOf, trustRootFromEnv, untilSignal, wholeNumber, withBus, withCommon, type CommonOptions } from "./options.js";
import { dataDirOf } from "./up-record.js";
import { partsText } from "./render.js";
import { agentCmd, agentHttp } from "./adapters.js";
import { loadAgentModule, startAgentModule, type AgentModule } from "./modules.js";
import { joinRemoteAgent } from "../adapters/a2a/index.js";
import { a2aBridge } from "../bridges/a2a/index.js";
import { keySeedFile, persistentIdentity } from "../bridges/http/index.js";
import Fastify from "fastify";
import { StdioServerTransport, serveStdio } from "@modelcontextprotocol/server/stdio";
import { mcpServer, requestStates } from "../bridges/mcp/modern.js";
import { AuthorityState } from "../authority/index.js";
import { DEFAULT_AUTHORITY_DIR, rotateInDirectory } from "./authority.js";


export { send } from "./send.js";
export { tail } from "./tail.js";

/** `agentbus keygen`: a new identity, seed written 0600 (no NATS needed; the common options are accepted). */
export function keygen(): Command {
  return withCommon(new Command("keygen"))
    .description("generate an identity (Ed25519 nkey); writes the seed to a 0600 file and prints the id")
    .argument("<file>", "where to write the seed")
    .option("--force", "overwrite an existing file")
    .action((file: string, o: CommonOptions & { force?: boolean }) => {
      if (existsSync(file) && !o.force) throw new AgentBusError("INVALID_INPUT", `${file} exists (use --force to overwrite)`);
      const id = Identity.generate();
      id.writeSeed(file);
      print(o, { id: id.id, file }, id.id);
    });
}

/** `agentbus id <file>`: the identity id of a seed file (no NATS needed; the common options are accepted). */
export function id(): Command {
  return withCommon(new Command("id"))
    .description("print the identity id (U…) of a seed file")
    .argument("<file>", "nkey seed file (agentbus keygen, or a .creds file)")
    .addHelpText(
      "after",
      `
Exit code 2 when the file is missing or holds no valid nkey user seed.

  agentbus id me.nk
  agentbus acl allow me-echo $(agentbus id me.nk) '*' echo --admin-seed admin.nk`,
    )
    .action((file: string, o: CommonOptions) => {
      const identity = identityFromFile(file, "seed file");
      print(o, { id: identity.id, file }, identity.id);
    });
}

/** `agentbus ls`: agents from the registry. */
export function ls(): Command {
  return withCommon(new Command("ls"))
    .description("list registered agents with their capabilities and liveness")
    .option("--capability <cap>", "only agents offering this capability")
    .option("--tag <tag>", "only agents with a skill tagged so")
    .option("--online", "only online agents")
    .option("--region <name>", "only agents with an instance running in this region")
    .option("--topology", "print the regions instead: live agents and instances in each and, federated, whether this region hears from each other one and from each edge site")
    .action(async (o: CommonOptions & { capability?: string; tag?: string; online?: boolean; region?: string; topology?: boolean }) => {
      await withBus(o, async (bus) => {
        const topology = await bus.topology();
        const hubLine = topology.hub && `hub ${topology.hub.domain}${topology.hub.region ? ` (${topology.hub.region})` : ""}: link ${topology.hub.up ? "up" : "down"}, ${topology.hub.waiting} task${topology.hub.waiting === 1 ? "" : "s"} of this identity waiting at the edge`;
        if (o.topology) {
          print(o, topology, [...siteLines(topology), ...(hubLine ? [hubLine] : [])].join("\n"));
          return;
        }
        const agents = bus.discover({ capability: o.capability, tag: o.tag, online: o.online ? true : undefined, region: o.region });
        if (o.json) print(o, agents.map(({ card: _c, ...a }) => a), "");
        else {
          // The regions first, when there are any to tell apart.
          if (topology.federated || topology.regions.length > 1) for (const line of siteLines(topology)) process.stdout.write(`${line}\n`);
          if (hubLine) process.stdout.write(`${hubLine}\n`);
          for (const a of agents) process.stdout.write(`${a.online ? "●" : "○"} ${a.name}  ${a.id}  [${a.capabilities.join(", ")}]  instances=${a.instances}${a.regions.length ? `  regions=${a.regions.join(",")}` : ""}\n`);
        }
      });
    });
}

/** One region (or edge site) of `agentbus ls`: `region west: 2 agents, 3 instances, link up (heard 0.4 s ago)`. */
function regionLine(r: RegionView | EdgeView, kind = "region"): string {
  const link = r.link === undefined ? "" : `, link ${r.link.up ? "up" : "down"}${r.link.lastHeardMs === undefined ? " (never heard)" : ` (heard ${(r.link.lastHeardMs / 1000).toFixed(1)} s ago${r.link.lag ? `, ${r.link.lag} behind` : ""})`}${r.link.error ? `: ${r.link.error}` : ""}`;
  return `${kind} ${r.name}${"local" in r && r.local ? " (here)" : ""}: ${r.agents} agent${r.agents === 1 ? "" : "s"}, ${r.instances} instance${r.instances === 1 ? "" : "s"}${link}`;
}

/** The regions, then the edge sites heard from, of `agentbus ls`. */
function siteLines(t: Topology): string[] {
  return [...t.regions.map((r) => regionLine(r)), ...(t.edges ?? []).map((e) => regionLine(e, "edge"))];
}

/** `agentbus call <cap> <input>`: one fast call. */
export function call(): Command {
  return withCommon(new Command("call"))
    .description("fast call: send input to a capability and print the reply")
    .argument("<capability>", "capability id")
    .argument("<input>", "plain text (a text part) or JSON (a data part)")
    .option("--target <agent>", "call this agent id only")
    .option("--region <name>", "call only an instance running in this region (default: prefer this connection's region, AGENTBUS_REGION)")
    .option("--timeout <ms>", "reply deadline in ms", wholeNumber("--timeout", 1), 30_000)
    .addHelpText(
      "after",
      `
Exit codes: 0 answered, 1 refused or failed (NO_RESPONDERS: no agent offers
the capability; DENIED, TIMEOUT, …), 2 usage error, 3 NATS unreachable.`,
    )
    .action(async (cap: string, input: string, o: CommonOptions & { target?: string; region?: string; timeout: number }) => {
      await withBus(o, async (bus) => {
        const reply = await bus.call(cap, parseInput(input), { target: o.target, region: o.region, timeout: o.timeout });
        print(o, reply, partsText(reply.parts));
      });
    });
}

/** Options of the commands that sign policy. */
interface AdminOptions extends CommonOptions {
  adminSeed?: string;
}

/** Adds `--admin-seed <file>` (env `AGENTBUS_ADMIN_SEED_FILE`) to a command that signs policy. */
function withAdmin(cmd: Command): Command {
  return withCommon(cmd).option("--admin-seed <file>", "nkey seed file of a tenant admin: signs the change (env AGENTBUS_ADMIN_SEED_FILE)", process.env.AGENTBUS_ADMIN_SEED_FILE);
}


/** Connect options for a command acting as the tenant admin of `--admin-seed`; a usage error (exit 2) without one. */
function asAdmin(o: AdminOptions, what: string): Partial<ConnectOptions> {
  if (!o.adminSeed) {
    throw new AgentBusError("INVALID_INPUT", `${what} is signed by a tenant admin: give --admin-seed <file> (or AGENTBUS_ADMIN_SEED_FILE)`);
  }
  return { identity: identityFromFile(o.adminSeed, "--admin-seed"), trustRoot: trustRootFromEnv() };
}

/** `agentbus acl allow|group|rm|ls|trust`: edit the tenant's policy, signed with an admin key. */
export function acl(): Command {
  const cmd = new Command("acl").description("edit the tenant's ACL (signed by a tenant admin; hot-reloaded by every agent)");
  cmd.addCommand(
    withAdmin(new Command("allow"))
      .description("add or replace a rule: SOURCE may invoke CAPABILITIES on TARGET")
      .argument("<name>", "rule name")
      .argument("<source>", "agent id, group:<name> or *")
      .argument("<target>", "agent id, group:<name> or *")
      .argument("<capabilities...>", "capability patterns (NATS wildcards: * one token, > the rest)")
      .action(async (name: string, source: string, target: string, capabilities: string[], o: AdminOptions) => {
        const admin = asAdmin(o, "an ACL rule");
        await withBus(o, async (bus) => {
          await bus.acl.putRule(name, { source, target, capabilities });
          print(o, { rule: name, source, target, capabilities }, `rule ${name} set`);
        }, admin);
      }),
  );
  cmd.addCommand(
    withAdmin(new Command("group"))
      .description("set a group's members")
      .argument("<name>", "group name")
      .argument("<members...>", "agent ids")
      .action(async (name: string, members: string[], o: AdminOptions) => {
        const admin = asAdmin(o, "an ACL group");
        await withBus(o, async (bus) => {
          await bus.acl.putGroup(name, members);
          print(o, { group: name, members }, `group ${name} set`);
        }, admin);
      }),
  );
  cmd.addCommand(
    withAdmin(new Command("rm"))
      .description("remove a rule (a signed tombstone)")
      .argument("<name>", "rule name")
      .action(async (name: string, o: AdminOptions) => {
        const admin = asAdmin(o, "removing a rule");
        await withBus(o, async (bus) => {
          await bus.acl.deleteRule(name);
          print(o, { removed: name }, `rule ${name} removed`);
        }, admin);
      }),
  );
  cmd.addCommand(
    withAdmin(new Command("trust"))
      .description("set the tenant's trust root (first time), or rotate it: the admins whose signatures make policy valid")
      .argument("<admins...>", "admin identity ids (U…)")
      .addHelpText(
        "after",
        `
The first root may be set by anyone; processes that pin no root
(connect({ trustRoot }), AGENTBUS_TRUST_ROOT) take the first one they see.
A later root must be signed by an admin of the current one.

  agentbus keygen admin.nk                          # prints the admin's id, U…
  agentbus acl trust U… --admin-seed admin.nk`,
      )
      .action(async (admins: string[], o: AdminOptions) => {
        const admin = asAdmin(o, "the trust root");
        await withBus(o, async (bus) => {
          await bus.acl.setTrustRoot(admins);
          print(o, { admins: bus.acl.admins() }, `trust root: ${bus.acl.admins().join(", ")}`);
        }, admin);
      }),
  );
  cmd.addCommand(
    withCommon(new Command("ls"))
      .description("show rules and groups")
      .action(async (o: CommonOptions) => {
        await withBus(o, async (bus) => {
          const p = bus.acl.policy();
          const out = { admins: bus.acl.admins(), rules: Object.fromEntries(p.rules), groups: Object.fromEntries(p.groups), rotations: Object.fromEntries(p.aliases ?? []) };
          print(o, out, JSON.stringify(out, null, 2));
        }, { trustRoot: trustRootFromEnv() });
      }),
  );
  return cmd;
}

/** `agentbus revoke <id>`: revoke an identity tenant-wide, signed with an admin key. */
export function revoke(): Command {
  return withAdmin(new Command("revoke"))
    .description("revoke an identity: every agent refuses it from now on (signed by a tenant admin)")
    .argument("<id>", "agent id (U…)")
    .option("--reason <text>", "why", "revoked")
    .option("--undo", "lift the revocation (a signed lift)")
    .action(async (id: string, o: AdminOptions & { reason: string; undo?: boolean }) => {
      const admin = asAdmin(o, "a revocation");
      await withBus(o, async (bus) => {
        if (o.undo) await bus.unrevoke(id);
        else await bus.revoke(id, o.reason);
        print(o, { id, revoked: !o.undo }, `${id} ${o.undo ? "unrevoked" : "revoked"}`);
      }, admin);
    });
}

/** `agentbus identity rotate`: move an identity to a new key, keeping its grants. */
export function identity(): Command {
  const cmd = new Command("identity").description("manage identities");
  cmd.addCommand(
    withAdmin(new Command("rotate"))
      .description("rotate --seed's identity to --new-seed's key: the new key keeps the grants and group memberships, the old one is refused")
      .requiredOption("--new-seed <file>", "nkey seed file of the new key (agentbus keygen)")
      .option("--dir <dir>", `the authority's directory, to move the identity's record there too (env AGENTBUS_AUTHORITY_DIR; on a server that requires authentication, default ${DEFAULT_AUTHORITY_DIR} when it exists)`, process.env.AGENTBUS_AUTHORITY_DIR)
      .addHelpText(
        "after",
        `
Both keys sign the move (proof of possession); the tenant admin of
--admin-seed stores it. On a secured server the authority's directory
(--dir) moves the identity's record too: the new key may connect, the old
one's connections are closed. Then restart the agent with --seed <new
file>: it registers under the new id. The old key is refused from now on.

  agentbus keygen writer-2.nk
  agentbus identity rotate --seed writer.nk --new-seed writer-2.nk --admin-seed admin.nk`,
      )
      .action(async (o: AdminOptions & { newSeed: string; dir?: string }) => {
        if (!o.seed) throw new AgentBusError("INVALID_INPUT", "give --seed <file>: the identity's current key");
        const admin = asAdmin(o, "a key rotation");
        const proof = proveRotation(identityFromFile(o.seed, "--seed"), identityFromFile(o.newSeed, "--new-seed"), targetOf(o).tenant);
        const secured = await withBus({ ...o, seed: undefined }, async (bus) => {
          await bus.rotateIdentity(proof);
          return Boolean(bus.nc.info?.auth_required);
        }, admin);
        // The directory too: given, or the default one next to a server that requires authentication.
        const dir = o.dir ?? (secured && AuthorityState.exists(DEFAULT_AUTHORITY_DIR) ? DEFAULT_AUTHORITY_DIR : undefined);
        const moved = dir ? await rotateInDirectory({ ...o, dir }, proof.from, proof.to) : false;
        if (secured && !moved) {
          process.stderr.write(`agentbus: the authority's directory has no record of ${proof.from}${dir ? ` (${dir})` : " (give --dir <the authority's directory>)"}: issue the new key there (agentbus identity issue --seed ${o.newSeed} …) before it connects\n`);
        }
        print(o, { from: proof.from, to: proof.to, directory: moved }, `${proof.from} rotated to ${proof.to}${moved ? " (and in the authority's directory)" : ""}`);
      }),
  );
  return cmd;
}

/** `agentbus task get|cancel <id>`: a task's snapshot, or cancel it. */
export function task(): Command {
  const cmd = new Command("task").description("inspect or cancel a durable task");
  cmd.addCommand(
    withCommon(new Command("ls"))
      .description("list the tasks this identity may see, newest first, with their priority, delayed time and deadline")
      .option("--state <state>", "only tasks in this state (submitted, working, completed, failed, canceled, …)")
      .option("--context <id>", "only tasks of this A2A context")
      .option("--page-size <n>", "at most this many (1–1000)", wholeNumber("--page-size", 1), 50)
      .action(async (o: CommonOptions & { state?: string; context?: string; pageSize: number }) => {
        await withBus(o, async (bus) => {
          const state = o.state === undefined ? undefined : (`TASK_STATE_${o.state.replace(/^TASK_STATE_/i, "").toUpperCase()}` as TaskState);
          const page = await bus.tasks({ state, contextId: o.context, pageSize: o.pageSize });
          const line = (t: Task) =>
            [
              t.id,
              t.status.state.replace("TASK_STATE_", "").toLowerCase(),
              t.metadata.capability,
              t.status.timestamp,
              typeof t.metadata.priority === "string" && `priority ${t.metadata.priority}`,
              typeof t.metadata.runAt === "number" && `runs at ${new Date(t.metadata.runAt).toISOString()}`,
              typeof t.metadata.deadline === "number" && `deadline ${new Date(t.metadata.deadline).toISOString()}`,
            ].filter(Boolean).join("  ");
          print(o, page, page.tasks.map(line).join("\n"));
        });
      }),
  );
  cmd.addCommand(
    withCommon(new Command("get"))
      .description("print a task's snapshot (state, artifacts, history)")
      .argument("<id>", "task id")
      .action(async (id: string, o: CommonOptions) => {
        await withBus(o, async (bus) => {
          const t = await bus.task(id);
          // A delayed task's time and a deadline, when it has them.
          const when = [
            typeof t.metadata.priority === "string" && `  priority ${t.metadata.priority}`,
            typeof t.metadata.runAt === "number" && `  runs at ${new Date(t.metadata.runAt).toISOString()}`,
            typeof t.metadata.deadline === "number" && `  deadline ${new Date(t.metadata.deadline).toISOString()}`,
          ].filter(Boolean).join("");
          print(o, t, `${t.id}  ${t.status.state}  ${t.metadata.capability}${when}\n${JSON.stringify(t.artifacts.map((a) => a.parts), null, 2)}`);
        });
      }),
  );
  cmd.addCommand(
    withCommon(new Command("cancel"))
      .description("cancel a queued, waiting or running task")
      .argument("<id>", "task id")
      .action(async (id: string, o: CommonOptions) => {
        await withBus(o, async (bus) => {
          const t = await (await bus.taskHandle(id)).cancel();
          print(o, t, `${t.id}  ${t.status.state}`);
        });
      }),
  );
  return cmd;
}

/** `agentbus agent run <module>` and `agentbus agent a2a <card-url>`: run an agent on the bus until interrupted. */
export function agent(): Command {
  const cmd = new Command("agent").description("run agents on the bus");
  cmd.addCommand(
    withCommon(new Command("run"))
      .description("load a module and run the agent it defines on the bus until Ctrl-C / SIGTERM")
      .argument("<module>", "path of a JavaScript module (TypeScript when run through tsx), or a package name")
      .option("--insecure", "development only: skip the ACL for this agent (env AGENTBUS_INSECURE=1)", process.env.AGENTBUS_INSECURE === "1")
      .addHelpText(
        "after",
        `
The module's default export is either
  a function (bus) => Promise<unknown>: called with the connected bus; what it
    resolves to is stopped on exit when it has a stop() method (an Agent does),
  or an agent definition {spec, handlers, options?}: run as bus.agent(spec, handlers, options).

The agent acts as --seed's identity (give one: a fresh identity each run
cannot be named in ACL rules). On Ctrl-C or SIGTERM in-flight work finishes
(drain), presence is withdrawn and the process exits 0.

  agentbus agent run agents/writer.ts --seed writer.nk     # through tsx
  agentbus agent run ./my-agent.js --insecure              # local play`,
      )
      .action(async (module: string, o: CommonOptions & { insecure?: boolean }) => {
        const p = progress(o, `loading ${module}`);
        let entry: AgentModule;
        try {
          entry = await loadAgentModule(module);
          p.text(`connecting to ${targetOf(o).where}`);
        } catch (err) {
          p.stop();
          throw err;
        }
        await withBus(o, async (bus) => {
          const stopped = untilSignal();
          const running = await Promise.race([startAgentModule(bus, entry).then((r) => ({ r })), stopped.then(() => undefined)]);
          p.stop();
          if (!running) return; // interrupted while starting
          const card = (running.r as { card?: { name?: string; skills?: Array<{ id: string }> } } | undefined)?.card;
          const capabilities = card?.skills?.map((s) => s.id);
          print(
            o,
            { id: bus.id, module, ...(card?.name && { name: card.name }), ...(capabilities && { capabilities }) },
            `${card?.name ?? module} (${bus.id})${capabilities ? ` serves ${capabilities.join(", ")}` : " is running"}; Ctrl-C to stop`,
          );
          await stopped;
          const stop = (running.r as { stop?: () => unknown } | undefined)?.stop;
          if (typeof stop === "function") await stop.call(running.r);
        }, { insecureAllowAll: o.insecure });
      }),
  );
  cmd.addCommand(
    withCommon(new Command("a2a"))
      .description("join a remote A2A agent: its skills become bus capabilities, forwarded with the A2A client")
      .argument("<card-url>", "URL of its agent card (…/.well-known/agent-card.json)")
      .option("--name <name>", "local agent name (default: the card's)")
      .action(async (cardUrl: string, o: CommonOptions & { name?: string }) => {
        await withBus(o, async (bus) => {
          const remote = await joinRemoteAgent({ bus, cardUrl, name: o.name });
          print(o, { id: bus.id, name: remote.agent.card.name, skills: remote.card.skills.map((s) => s.id) }, `${remote.agent.card.name} (${bus.id}) serves ${remote.card.skills.map((s) => s.id).join(", ")}; Ctrl-C to stop`);
          await untilSignal();
          await remote.stop();
        });
      }),
  );
  cmd.addCommand(agentHttp());
  cmd.addCommand(agentCmd());
  return cmd;
}

/** `agentbus bridge a2a`: serve the tenant's agents over A2A until interrupted. */
export function bridge(): Command {
  const cmd = new Command("bridge").description("serve the bus to the outside");
  cmd.addCommand(
    withCommon(new Command("a2a"))
      .description("A2A v1.0 (JSON-RPC, HTTP+JSON and, with --grpc-port, gRPC; v0.3 JSON-RPC too) for every agent of the tenant")
      .option("--port <port>", "HTTP port", wholeNumber("--port", 0), 8080)
      .option("--grpc-port <port>", "serve the gRPC binding on this port too", wholeNumber("--grpc-port", 0))
      .option("--host <host>", "listen address", "127.0.0.1")
      .option("--base-url <url>", "public base URL for the cards (default: from the Host header)")
      .option("--keys <file>", "API keys file: JSON [{name, sha256, tenant?, seedFile?}]")
      .option("--open", "no authentication (local use only)")
      .addHelpText("after", `
API keys without seedFile act as an identity kept in the data dir
(<data-dir>/keys/<name>.seed, created on first use).`)
      .action(async (o: CommonOptions & { port: number; grpcPort?: number; host: string; baseUrl?: string; keys?: string; open?: boolean }) => {
        if (!o.open === !o.keys) throw new AgentBusError("INVALID_INPUT", "give --keys <file> or --open");
        const keys = o.keys ? apiKeysFrom(o.keys) : [];
        const bus = await busFrom(o);
        // Each key acts as one identity across restarts, so it can be granted: its seedFile, else one kept in the data dir.
        const keySeeds = keys.map((k) => {
          if (k.seedFile) return k.seedFile;
          const file = keySeedFile(dataDirOf(o), k.name);
          const { identity, created } = persistentIdentity(file);
          if (created) process.stderr.write(`agentbus: API key ${k.name} acts as ${identity.id} (kept in ${file}); grant it: agentbus acl allow <rule> ${identity.id} <agent> <capabilities> --admin-seed <file>\n`);
          return file;
        });
        const keyBuses = await Promise.all(keys.map((k, i) => busFrom({ ...o, tenant: k.tenant ?? o.tenant, seed: keySeeds[i] })));
        const app = Fastify({ routerOptions: { ignoreTrailingSlash: true } });
        await app.register(a2aBridge, {
          bus,
          baseUrl: o.baseUrl,
          open: o.open,
          apiKeys: o.open ? undefined : keys.map((k, i) => ({ name: k.name, sha256: k.sha256, bus: keyBuses[i]! })),
          ...(o.grpcPort !== undefined && { grpc: { port: o.grpcPort, host: o.host } }),
        });
        const url = await app.listen({ port: o.port, host: o.host });
        print(o, { url }, `A2A bridge on ${url} (cards: ${url}/a2a/<agent>/.well-known/agent-card.json); Ctrl-C to stop`);
        await untilSignal();
        await app.close();
        await Promise.all([bus, ...keyBuses].map((b) => b.close()));
      }),
  );
  return cmd;
}

/** `agentbus mcp`: the tenant's capabilities as MCP tools on stdio (for a client that spawns it). */
export function mcp(): Command {
  return withCommon(new Command("mcp"))
    .description("MCP server on stdio: every capability of the tenant is a tool (logs go to stderr); exits within 2 s of its stdin closing or SIGTERM")
    .action(async (o: CommonOptions) => {
      // stdin is read from the start (into a buffer the MCP transport reads later), so its end is seen even while NATS is still being reached.
      const input = new PassThrough();
      process.stdin.pipe(input);
      const gone = new Promise<void>((resolve) => {
        process.stdin.once("end", resolve);
        for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, resolve);
      });
      // Whatever NATS is doing (reconnecting, draining), the process is gone within 2 s of its client.
      void gone.then(() => setTimeout(() => process.exit(Exit.ok), STDIO_EXIT_MS).unref());
      await withBus(o, async (bus) => {
        // Both revisions: the client's first message decides the connection's (2025-11-25 initialize, or 2026-07-28 requests).
        const states = requestStates(bus);
        const transport = new StdioServerTransport(input, process.stdout);
        const closed = new Promise<void>((resolve) => (transport.onclose = resolve));
        const served = serveStdio((ctx) => mcpServer({ bus }, states, ctx.era), { transport, onerror: (err) => bus.log.warn({ err: err.message }, "MCP stdio") });
        await Promise.race([closed, gone]);
        await served.close();
      });
    });
}

/** How long `agentbus mcp` takes at most to exit once its client is gone: a clean close first, then a hard exit. */
const STDIO_EXIT_MS = 1_000;

/** Maps an error to the documented exit code. */
export function exitCodeOf(err: unknown): number {
  if (isConnectionFailure(err) || isAgentBusError(err, "UNAVAILABLE")) return Exit.connection;
  if (isAgentBusError(err, "INVALID_INPUT") || isAgentBusError(err, "MISUSE")) return Exit.usage;
  return Exit.taskFailed;
}
