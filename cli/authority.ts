/**
 * Operators' commands for a secured bus: the authority (`agentbus authority
 * serve|config`), tenants as NATS accounts (`agentbus tenant
 * create|ls|export`) and the identity directory (`agentbus identity
 * issue|ls|revoke`). They read the authority's directory (`--dir`: its
 * keys and tenants) and reach the server as the authority's service user,
 * never as a tenant's identity. Seeds are written 0600 and never printed.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { Command, Option } from "commander";
import { errors as natsErrors } from "@nats-io/nats-core";
import {
  AgentBusError,
  Identity,
  IdentityRoles,
  checkCapability,
  type IdentityRole,
  type Logger,
} from "../core/index.js";
import {
  Authority,
  AuthorityState,
  admins,
  includeFileText,
  processAlive,
  readServerRecord,
  recordServer,
  reloadServer,
  setUpTenant,
  staticIncludeFileText,
  staticServerConfig,
  type IdentityRecord,
  type ReloadOutcome,
} from "../authority/index.js";
import { cliLogger, connectionFailure, identityFromFile, LOG_LEVELS, print, untilSignal } from "./options.js";
import { ACCEPTED_FORMS, DEFAULT_NATS_URL, expectNatsGreeting, natsAddresses } from "./nats-url.js";
import { dataDirOf, liveUpRecord, upRecordPath } from "./up-record.js";

/** The authority's directory when `--dir` and `AGENTBUS_AUTHORITY_DIR` are not given: the one `agentbus up` uses. */
export const DEFAULT_AUTHORITY_DIR = join(".agentbus", "authority");

/** Options of the authority commands. */
export interface AuthorityCliOptions {
  dir: string;
  nats?: string;
  json?: boolean;
  logLevel?: string;
}

/** Adds `--dir`, `--json` and `--log-level` (and `--nats` unless `nats` is false). */
function withDir(cmd: Command, o: { nats?: boolean; logLevel?: string } = {}): Command {
  cmd
    .option("--dir <dir>", `the authority's directory: its keys and tenants (env AGENTBUS_AUTHORITY_DIR; default ${DEFAULT_AUTHORITY_DIR})`, process.env.AGENTBUS_AUTHORITY_DIR ?? DEFAULT_AUTHORITY_DIR)
    .option("--json", "machine-readable JSON output")
    .addOption(new Option("--log-level <level>", `log level, logs on stderr (env AGENTBUS_LOG_LEVEL; default ${o.logLevel ?? "warn"})`).choices(LOG_LEVELS));
  if (o.nats !== false) {
    cmd.option("--nats <url>", `NATS server: ${ACCEPTED_FORMS} (env NATS_URL; default: the server agentbus up started for --dir, else the one recorded by the agentbus up running with AGENTBUS_DATA_DIR or ./.agentbus, else ${DEFAULT_NATS_URL})`);
  }
  return cmd;
}

/** The authority state in `o.dir`; a usage error (exit 2) when there is none. */
function stateOf(o: AuthorityCliOptions): AuthorityState {
  if (!AuthorityState.exists(o.dir)) {
    throw new AgentBusError("INVALID_INPUT", `no authority in ${o.dir}: give --dir <the authority's directory> (agentbus up keeps one in <data-dir>/authority; agentbus authority config --dir <dir> makes one)`);
  }
  return new AuthorityState(o.dir);
}

/**
 * `--nats`, else `NATS_URL`, else the running server `agentbus up` started
 * for the directory, else the one the running `agentbus up` of the data
 * dir recorded, else the default local URL.
 *
 * @throws {AgentBusError} `INVALID_INPUT` (exit 2) for an address that is
 *   not a NATS one.
 */
export function serversOf(o: { nats?: string }, dir: string): string {
  const given = o.nats ?? (process.env.NATS_URL || undefined);
  if (given !== undefined) {
    natsAddresses(given, o.nats !== undefined ? "--nats" : "NATS_URL");
    return given;
  }
  const record = readServerRecord(dir);
  if (record?.kind === "launched" && processAlive(record.pid)) return record.url;
  const dataDir = dataDirOf({});
  const up = liveUpRecord(dataDir);
  if (up) {
    natsAddresses(up.nats, `the server recorded in ${upRecordPath(dataDir)}`);
    return up.nats;
  }
  return DEFAULT_NATS_URL;
}

/**
 * Checks that `servers` greets as a NATS server within seconds.
 *
 * @throws {AgentBusError} `UNAVAILABLE` (exit 3) when it does not.
 */
async function expectNats(servers: string): Promise<void> {
  try {
    await expectNatsGreeting(natsAddresses(servers, "--nats"), servers);
  } catch (err) {
    throw connectionFailure(err);
  }
}

const loggerOf = (o: { logLevel?: string }, fallback?: string): Logger => cliLogger(o, fallback);

/**
 * Connects to the server as the authority's service and system users
 * (without answering authorization requests: the running authority does).
 *
 * @throws {AgentBusError} `UNAVAILABLE` (exit 3) when the server is not
 *   reachable or refuses the authority's keys.
 */
export async function openAuthority(o: { nats?: string; logLevel?: string }, state: AuthorityState): Promise<Authority> {
  const servers = serversOf(o, state.dir);
  const logger = loggerOf(o);
  await expectNats(servers);
  try {
    return await Authority.open({
      servers, keys: state.keys, identity: state.identity, tenants: () => state.tenants(), trustRoot: (t) => admins(state.dir, t), logger,
    });
  } catch (cause) {
    if (cause instanceof natsErrors.AuthorizationError) {
      throw new AgentBusError("UNAVAILABLE", `nats-server at ${servers} refused the authority's service key from ${state.dir}: is it running with this authority's configuration (agentbus authority config --dir ${state.dir})?`, { cause });
    }
    throw new AgentBusError("UNAVAILABLE", `cannot connect to NATS at ${servers}: ${(cause as Error).message}`, { cause });
  }
}

async function withAuthority<T>(o: AuthorityCliOptions, state: AuthorityState, work: (authority: Authority) => Promise<T>): Promise<T> {
  const authority = await openAuthority(o, state);
  try {
    return await work(authority);
  } finally {
    await authority.stop();
  }
}

/** A pid, or the path of a pid file (`nats-server -P <file>`). */
function pidOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const text = /^\d+$/.test(value) ? value : existsSync(value) ? readFileSync(value, "utf8").trim() : "";
  const pid = Number(text);
  if (!Number.isInteger(pid) || pid <= 0) throw new AgentBusError("INVALID_INPUT", `--server-pid ${value}: not a pid nor a file holding one`);
  return pid;
}

/** What a reload did, for people. */
function reloadSentence(r: ReloadOutcome): string {
  return r.reloaded ? `nats-server (pid ${r.pid}) reloaded ${r.file}` : `${r.reason}${r.command ? `: run ${r.command}` : ""}`;
}

/** `agentbus authority serve|config`. */
export function authority(): Command {
  const cmd = new Command("authority").description("the authority: tenants as NATS accounts, identities authenticated by their key (nats-server 2.10+ auth callout)");
  cmd.addCommand(
    withDir(new Command("serve"), { logLevel: "info" })
      .description("answer nats-server's auth callout for the server configured with this authority (until Ctrl-C / SIGTERM)")
      .addHelpText(
        "after",
        `
The server must include the blocks of agentbus authority config (same --dir).
Several replicas may run against one server: they share the requests.

  agentbus authority serve --dir ./authority --nats nats://127.0.0.1:4222`,
      )
      .action(async (o: AuthorityCliOptions) => {
        const state = stateOf(o);
        const servers = serversOf(o, state.dir);
        const logger = loggerOf(o, "info");
        await expectNats(servers);
        let running: Authority;
        try {
          running = await Authority.start({
            servers, keys: state.keys, identity: state.identity, tenants: () => state.tenants(), trustRoot: (t) => admins(state.dir, t), logger,
          });
        } catch (cause) {
          const why = cause instanceof natsErrors.AuthorizationError
            ? `nats-server at ${servers} refused the authority's service key from ${state.dir}: include the blocks of agentbus authority config --dir ${state.dir} in its config and reload it`
            : `cannot connect to NATS at ${servers}: ${(cause as Error).message}`;
          throw new AgentBusError("UNAVAILABLE", why, { cause });
        }
        const tenants = state.tenants().map((t) => t.name);
        print(o, { serving: true, nats: servers, dir: state.dir, tenants }, `authority answering nats-server at ${servers} (tenants: ${tenants.join(", ") || "none yet"}); Ctrl-C to stop`);
        await untilSignal();
        await running.stop();
      }),
  );
  cmd.addCommand(
    withDir(new Command("config"), { nats: false })
      .description("write the nats-server configuration blocks (accounts per tenant, AUTH and SYS, the auth callout) as an include file")
      .option("--out <file>", "where to write it (default <dir>/nats-accounts.conf)")
      .option("--static", "for a server without auth callout (older than 2.10): every issued identity with its role's permissions written into the file")
      .option("--nats <url>", "with --static: the server already running this authority's static configuration, whose directory and ACLs give the identities and grants (absent: the authority's own admin users only, for a first start)")
      .addHelpText(
        "after",
        `
Creates the authority's keys in --dir when it has none. The file holds
public keys only. agentbus tenant create and tenant export rewrite it.

  agentbus authority config --dir ./authority --out ./agentbus.conf
  # nats.conf:  jetstream { store_dir: ./data }   include ./agentbus.conf
  nats-server -c nats.conf

On a server older than 2.10 (no auth callout), --static writes the same
accounts with every identity issued in the directory and the capabilities
its tenant's ACL grants it. Generate it again and reload after issuing,
revoking or granting:

  agentbus authority config --dir ./authority --static --out ./agentbus.conf
  nats-server -c nats.conf
  agentbus authority config --dir ./authority --static --nats nats://127.0.0.1:4222 --out ./agentbus.conf
  nats-server --signal reload`,
      )
      .action(async (o: AuthorityCliOptions & { out?: string; static?: boolean }) => {
        const state = new AuthorityState(o.dir);
        const file = resolve(o.out ?? join(o.dir, "nats-accounts.conf"));
        if (o.static) {
          const logger = loggerOf(o);
          if (o.nats !== undefined) await expectNats(serversOf(o, state.dir));
          const config = await staticServerConfig({ state, servers: o.nats, logger });
          writeFileSync(file, staticIncludeFileText(config));
          const tenants = state.tenants().map((t) => t.name);
          print(o, { file, include: `include ${basename(file)}`, reload: "nats-server --signal reload", static: true, tenants }, `wrote ${file}: accounts for the tenants (${tenants.join(", ") || "none yet"}), AUTH and SYS, and each issued identity's permissions; include it from your nats-server's config and reload it after each change`);
          return;
        }
        writeFileSync(file, includeFileText(state));
        const previous = readServerRecord(state.dir);
        const keepLaunched = previous?.kind === "launched" && processAlive(previous.pid);
        if (!keepLaunched) recordServer(state.dir, { kind: "include", file });
        const tenants = state.tenants().map((t) => t.name);
        const include = `include ${basename(file)}`;
        print(
          o,
          { file, include, reload: "nats-server --signal reload", issuer: state.keys.issuer.getPublicKey(), tenants },
          [
            `wrote ${file}: accounts for the tenants (${tenants.join(", ") || "none yet: agentbus tenant create <name>"}), AUTH and SYS, and the auth callout (issuer ${state.keys.issuer.getPublicKey()})`,
            `Use it with your nats-server (2.10 or newer):`,
            `  1. in its config (JetStream enabled, no other authorization block): ${include}   (the path relative to that config file)`,
            `  2. start it (nats-server -c <config>), or reload a running one: nats-server --signal reload`,
            `  3. run the authority next to it: agentbus authority serve --dir ${o.dir} --nats nats://<host>:<port>`,
          ].join("\n"),
        );
      }),
  );
  return cmd;
}

/** `agentbus tenant create|ls|export`. */
export function tenant(): Command {
  const cmd = new Command("tenant").description("tenants: one NATS account each, with its own subjects, streams and buckets");
  cmd.addCommand(
    withDir(new Command("create"))
      .description("add a tenant (an account), reload the server, provision it and issue its admin (who signs its policy)")
      .argument("<name>", "tenant name ([a-z0-9_-]+)")
      .option("--admin-seed-out <file>", "where to write the admin's seed, 0600 (default <dir>/<name>-admin.seed; an existing file is the admin)")
      .option("--server-pid <pid>", "an operator's nats-server to reload (a pid, or its pid file: nats-server -P <file>); agentbus up's server is known")
      .option("--wait <seconds>", "how long to wait for the server to know the tenant", "60")
      .addHelpText(
        "after",
        `
Idempotent: run it again after a failed reload. The admin's id and seed
path are printed, never the seed.

  agentbus tenant create acme --dir ./authority --server-pid nats.pid
  agentbus acl allow … --tenant acme --admin-seed ./authority/acme-admin.seed`,
      )
      .action(async (name: string, o: AuthorityCliOptions & { adminSeedOut?: string; serverPid?: string; wait: string }) => {
        const state = stateOf(o);
        const waitMs = Number(o.wait) * 1000;
        if (!Number.isFinite(waitMs) || waitMs < 0) throw new AgentBusError("INVALID_INPUT", `--wait ${o.wait}: not a number of seconds`);
        const pid = pidOf(o.serverPid);
        state.addTenant(name);
        const reload = await reloadServer(state, { pid });
        await withAuthority(o, state, async (authority) => {
          await untilTenantKnown(authority, name, waitMs, reload);
          const seedFile = o.adminSeedOut ?? join(state.dir, `${name}-admin.seed`);
          const created = !existsSync(seedFile);
          const admin = Identity.fromFileOrCreate(seedFile);
          const trustRoot = await setUpTenant({ authority, state, servers: serversOf(o, state.dir), tenant: name, admin, logger: loggerOf(o) });
          print(
            o,
            { tenant: name, admin: admin.id, adminSeed: seedFile, adminSeedCreated: created, trustRoot, reloaded: reload.reloaded },
            [
              `tenant ${name}: account ${reload.reloaded ? "configured and the server reloaded" : "known to the server"}, streams and buckets provisioned`,
              `admin ${admin.id} (seed ${created ? "written to" : "in"} ${seedFile}, mode 0600): sign the tenant's policy with agentbus acl … --tenant ${name} --admin-seed ${seedFile}`,
              trustRoot.includes(admin.id) ? `trust root: ${trustRoot.join(", ")}` : `the tenant's trust root names other admins (${trustRoot.join(", ")}): left as it is`,
            ].join("\n"),
          );
        });
      }),
  );
  cmd.addCommand(
    withDir(new Command("ls"), { nats: false })
      .description("list the tenants with their admins and the capabilities they export")
      .action((o: AuthorityCliOptions) => {
        const state = stateOf(o);
        const tenants = state.tenants().map((t) => ({ name: t.name, admins: admins(state.dir, t.name) ?? [], exports: t.exports ?? [] }));
        if (o.json) return print(o, tenants, "");
        for (const t of tenants) {
          const exports = t.exports.map((e) => `${e.capability} → ${e.to.join(", ")}`).join("; ");
          process.stdout.write(`${t.name}  admins: ${t.admins.join(", ") || "none"}${exports ? `  exports: ${exports}` : ""}\n`);
        }
      }),
  );
  cmd.addCommand(
    withDir(new Command("export"), { nats: false })
      .description("offer one capability of a tenant to another tenant (a service export and import), and reload the server")
      .argument("<tenant>", "the tenant that serves the capability")
      .argument("<capability>", "capability id")
      .requiredOption("--to <tenant>", "the tenant whose callers may call it (its callers still need a grant in the serving tenant's ACL)")
      .option("--server-pid <pid>", "an operator's nats-server to reload (a pid, or its pid file); agentbus up's server is known")
      .action(async (from: string, capability: string, o: AuthorityCliOptions & { to: string; serverPid?: string }) => {
        const state = stateOf(o);
        checkCapability(capability);
        const pid = pidOf(o.serverPid);
        state.exportCapability(from, capability, o.to);
        const reload = await reloadServer(state, { pid });
        print(o, { tenant: from, capability, to: o.to, reloaded: reload.reloaded, ...(reload.reloaded ? {} : { reason: reload.reason, command: reload.command }) }, `${from} exports ${capability} to ${o.to}; ${reloadSentence(reload)}`);
      }),
  );
  return cmd;
}

/** Waits until the server has the tenant's account (the authority's own identity can connect to it). */
async function untilTenantKnown(authority: Authority, tenant: string, waitMs: number, reload: ReloadOutcome): Promise<void> {
  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    try {
      await authority.tenant(tenant);
      return;
    } catch (err) {
      if (Date.now() >= deadline) {
        throw new AgentBusError("UNAVAILABLE", `nats-server has no account for tenant ${tenant}: ${reload.reloaded ? "" : `${reloadSentence(reload)}; then `}run agentbus tenant create ${tenant} again (${(err as Error).message})`, { cause: err });
      }
      if (!told && !reload.reloaded) {
        told = true;
        process.stderr.write(`agentbus: waiting for nats-server to know tenant ${tenant}: ${reloadSentence(reload)}\n`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

const describeRecord = (r: IdentityRecord): string =>
  [
    r.id, r.tenant, r.role,
    r.name ? `"${r.name}"` : "",
    r.serves?.length ? `serves ${r.serves.join(",")}` : "",
    r.revokedAt ? `REVOKED ${new Date(r.revokedAt).toISOString()} (${r.reason ?? "revoked"})` : "",
    r.rotatedTo ? `rotated to ${r.rotatedTo}` : "",
  ].filter(Boolean).join("  ");

/** The identity directory's commands: `agentbus identity issue|ls|revoke` (`rotate` is in commands.ts). */
export function identityDirectoryCommands(): Command[] {
  const issue = withDir(new Command("issue"))
    .description("issue an identity: its tenant and role in the authority's directory (a new key unless --seed), seed written 0600")
    .option("--tenant <tenant>", "tenant (env AGENTBUS_TENANT)", process.env.AGENTBUS_TENANT ?? "default")
    .requiredOption("--role <role>", `${IdentityRoles.join(" | ")}`)
    .option("--serves <caps>", "agents: the capability patterns it may serve, comma separated")
    .option("--seed <file>", "issue this existing key instead of a new one")
    .option("--seed-out <file>", "where to write a new key's seed (default ./<name or role>.nk)")
    .option("--name <label>", "a label for operators")
    .addHelpText(
      "after",
      `
Roles: agent (serves --serves, calls what the ACL grants), caller (calls
what the ACL grants; its grants are read when it connects), bridge (a
gateway: may call any capability and checks its callers itself), admin
(the tenant's policy). Grants still come from the tenant's signed ACL:

  agentbus identity issue --tenant acme --role agent --serves greet --seed-out greeter.nk
  agentbus identity issue --tenant acme --role caller --seed-out alice.nk
  agentbus acl allow alice-greet <alice id> '*' greet --tenant acme --admin-seed acme-admin.seed`,
    )
    .action(async (o: AuthorityCliOptions & { tenant: string; role: string; serves?: string; seed?: string; seedOut?: string; name?: string }) => {
      if (!IdentityRoles.includes(o.role as IdentityRole)) throw new AgentBusError("INVALID_INPUT", `--role must be one of ${IdentityRoles.join(", ")}, not ${JSON.stringify(o.role)}`);
      const role = o.role as IdentityRole;
      const serves = o.serves?.split(",").map((s) => s.trim()).filter(Boolean);
      if (role === "agent" && !serves?.length) throw new AgentBusError("INVALID_INPUT", "an agent identity is issued for the capabilities it serves: give --serves <caps>");
      if (role !== "agent" && serves) throw new AgentBusError("INVALID_INPUT", `--serves is for agents; a ${role} serves nothing`);
      if (o.seed && o.seedOut) throw new AgentBusError("INVALID_INPUT", "give --seed (an existing key) or --seed-out (where to write a new one), not both");
      const seedOut = o.seed ? undefined : (o.seedOut ?? `${o.name ?? role}.nk`);
      if (seedOut && existsSync(seedOut)) throw new AgentBusError("INVALID_INPUT", `${seedOut} exists: give --seed ${seedOut} to issue that key, or another --seed-out`);
      const state = stateOf(o);
      const identity = o.seed ? identityFromFile(o.seed, "--seed") : Identity.generate();
      await withAuthority(o, state, async (authority) => {
        const before = authority.directory.get(identity.id);
        if (before?.revokedAt) throw new AgentBusError("INVALID_INPUT", `identity ${identity.id} was revoked (${before.reason ?? "revoked"}): issue a new key`);
        if (before?.rotatedTo) throw new AgentBusError("INVALID_INPUT", `identity ${identity.id} rotated to ${before.rotatedTo}: issue a new key`);
        const record = await authority.issue({ id: identity.id, tenant: o.tenant, role, serves, name: o.name });
        if (seedOut) identity.writeSeed(seedOut);
        const seedFile = seedOut ?? o.seed;
        print(
          o,
          { ...record, seedFile, updated: Boolean(before) },
          [
            `${before ? "updated" : "issued"} ${role} ${identity.id} in tenant ${o.tenant}${serves ? ` serving ${serves.join(", ")}` : ""}; seed in ${seedFile}${seedOut ? " (mode 0600)" : ""}`,
            role === "agent" || role === "caller" ? `it may call what the tenant's ACL grants it: agentbus acl allow <rule> ${identity.id} <target> <capabilities…> --tenant ${o.tenant} --admin-seed <admin seed>` : "",
          ].filter(Boolean).join("\n"),
        );
      });
    });

  const ls = withDir(new Command("ls"))
    .description("list issued identities: tenant, role, capabilities served, revoked or rotated")
    .option("--tenant <tenant>", "only this tenant's")
    .action(async (o: AuthorityCliOptions & { tenant?: string }) => {
      const state = stateOf(o);
      await withAuthority(o, state, async (authority) => {
        const records = authority.directory.list(o.tenant).sort((a, b) => a.tenant.localeCompare(b.tenant) || a.issuedAt - b.issuedAt);
        if (o.json) return print(o, records, "");
        for (const r of records) process.stdout.write(`${describeRecord(r)}\n`);
      });
    });

  const revoke = withDir(new Command("revoke"))
    .description("revoke an identity in the directory: its connections are closed now and refused from now on")
    .argument("<id>", "identity id (U…)")
    .option("--reason <text>", "why", "revoked")
    .addHelpText(
      "after",
      `
The server refuses the identity at once. To have agents refuse messages it
signed earlier too, also sign a revocation: agentbus revoke <id> --admin-seed …`,
    )
    .action(async (id: string, o: AuthorityCliOptions & { reason: string }) => {
      const state = stateOf(o);
      await withAuthority(o, state, async (authority) => {
        const before = authority.directory.get(id);
        if (!before) throw new AgentBusError("INVALID_INPUT", `identity ${id} was never issued by the authority in ${state.dir}`);
        const { closed, ...record } = before.revokedAt ? { ...before, closed: await authority.disconnect(id) } : await authority.revoke(id, o.reason);
        print(
          o,
          { id, tenant: record.tenant, revoked: true, reason: record.reason, revokedAt: record.revokedAt, closed },
          `${id} ${before.revokedAt ? "was already revoked" : "revoked"} (tenant ${record.tenant}); ${closed} open connection${closed === 1 ? "" : "s"} closed`,
        );
      });
    });
  return [issue, ls, revoke];
}

/**
 * After a signed key rotation: moves the identity's directory record to the
 * new key (`Authority.rotate`), so the new key may connect and the old one
 * is refused and disconnected. Resolves to false when the directory has no
 * record of `from`.
 */
export async function rotateInDirectory(o: { dir: string; nats?: string; logLevel?: string }, from: string, to: string): Promise<boolean> {
  const state = stateOf({ ...o });
  const authority = await openAuthority(o, state);
  try {
    if (!authority.directory.get(from)) return false;
    await authority.rotate(from, to);
    return true;
  } finally {
    await authority.stop();
  }
}
