/**
 * A secured nats-server on this machine: the launcher's server configured
 * with one account per tenant, plus the authority answering its auth
 * callout. Used by `agentbus up` (embedded server), by `agentbus authority`
 * and by the tests; the same files work for a server started by hand
 * (`nats-server -c <dir>/nats-server.conf`, then `agentbus authority serve`).
 */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { AgentBusError, Identity, connect, type Logger, type IdentityRole } from "../core/index.js";
import { HUB_DOMAIN, edgeBlock, mergeConfig, natsServerVersion, findNatsServer, startServer, startSupercluster, type NatsServer, type NatsSupercluster, type ServerOptions } from "../nats/index.js";
import { AUTH_ACCOUNT, authorityConfig, loadAuthorityKeys, type AuthorityKeys, type TenantSpec } from "./config.js";
import { Authority } from "./service.js";

/** The authority's state on disk: keys, its identity, the tenants (the accounts the server is configured with). */
export class AuthorityState {
  readonly dir: string;
  readonly keys: AuthorityKeys;
  /** The authority's own identity (admin of every tenant). */
  readonly identity: Identity;
  /**
   * The password edge sites' leaf connections sign in with at the hub
   * (`leaf.secret`, made on first use), checked by the authority.
   */
  readonly leafPassword: string;
  #tenants: TenantSpec[] = [];
  /** Modification time and size of `tenants.json` when last read. */
  #read = "";

  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.keys = loadAuthorityKeys(dir);
    this.identity = Identity.fromFileOrCreate(join(dir, "authority.seed"));
    const secret = join(dir, "leaf.secret");
    if (!existsSync(secret)) writeFileSync(secret, `${randomBytes(24).toString("base64url")}\n`, { mode: 0o600, flag: "wx" });
    this.leafPassword = readFileSync(secret, "utf8").trim();
    this.#refresh();
  }

  /**
   * True when `dir` holds an authority's keys (made by `new
   * AuthorityState(dir)`, `agentbus authority config` or `agentbus up`).
   */
  static exists(dir: string): boolean {
    return existsSync(join(dir, "issuer.nk")) && existsSync(join(dir, "service.nk"));
  }

  /**
   * The configured tenants. Read again when `tenants.json` changed, so a
   * tenant added by another process (`agentbus tenant create`) is seen by
   * a running authority at once.
   */
  tenants(): readonly TenantSpec[] {
    this.#refresh();
    return this.#tenants;
  }

  /** Adds a tenant (idempotent; with `regions`, federated across them) and saves. */
  addTenant(name: string, regions?: string[]): TenantSpec {
    if (!/^[a-z0-9_-]+$/.test(name)) throw new AgentBusError("INVALID_INPUT", `invalid tenant ${JSON.stringify(name)}: must match [a-z0-9_-]+`);
    this.#refresh();
    let t = this.#tenants.find((x) => x.name === name);
    if (!t) {
      t = { name, ...(regions?.length && { regions }) };
      this.#tenants = [...this.#tenants, t];
      this.#save();
    } else if (regions?.length && JSON.stringify(t.regions ?? []) !== JSON.stringify(regions)) {
      // Federated now (or across other regions): its identities' permissions name these regions.
      t = { ...t, regions };
      this.#tenants = this.#tenants.map((x) => (x.name === name ? t! : x));
      this.#save();
    }
    return t;
  }

  /** Offers `capability` of tenant `from` to tenant `to` (a service export and import) and saves. */
  exportCapability(from: string, capability: string, to: string): void {
    this.#refresh();
    const t = this.#tenants.find((x) => x.name === from);
    if (!t) throw new AgentBusError("INVALID_INPUT", `unknown tenant ${from}`);
    if (!this.#tenants.some((x) => x.name === to)) throw new AgentBusError("INVALID_INPUT", `unknown tenant ${to}`);
    const exports = [...(t.exports ?? [])];
    const e = exports.find((x) => x.capability === capability);
    if (e) {
      if (!e.to.includes(to)) e.to = [...e.to, to];
    } else exports.push({ capability, to: [to] });
    this.#tenants = this.#tenants.map((x) => (x.name === from ? { ...x, exports } : x));
    this.#save();
  }

  /** The accounts and callout blocks for the server config. */
  serverConfig(root?: string): Record<string, unknown> {
    return authorityConfig({ keys: this.keys, tenants: this.tenants(), mode: "callout", root });
  }

  #file(): string {
    return join(this.dir, "tenants.json");
  }

  #refresh(): void {
    const file = this.#file();
    let stamp = "";
    try {
      const st = statSync(file);
      stamp = `${st.mtimeMs}:${st.size}`;
    } catch {
      /* no tenants yet */
    }
    if (stamp === this.#read) return;
    this.#tenants = stamp ? (JSON.parse(readFileSync(file, "utf8")) as TenantSpec[]) : [];
    this.#read = stamp;
  }

  #save(): void {
    writeFileSync(this.#file(), `${JSON.stringify(this.#tenants, null, 2)}\n`, { mode: 0o600 });
    this.#read = "";
    this.#refresh();
  }
}

/** Options of {@link startSecureNats}. */
export interface SecureNatsOptions {
  /** Where the authority keeps its keys and tenants (created when missing). */
  dir: string;
  /** Tenants to have from the start. Default `["default"]`. */
  tenants?: string[];
  /** Launcher options for the server (store dir, port, binary…). */
  server?: Omit<ServerOptions, "config" | "auth">;
  /**
   * Regions: a supercluster of one cluster per region (joined by gateways,
   * every node with the tenants' accounts and the callout) instead of one
   * server, and every tenant created federated across them.
   */
  regions?: string[];
  /** Nodes per region (default 1). */
  nodesPerRegion?: number;
  /**
   * Edge sites (with `regions`): a leaf node each, with its own JetStream
   * domain (its name), the tenants' accounts linked to the first region
   * (the hub, domain `hub`), and its own authority answering its clients
   * from a mirror of the directory, so the edge authenticates while its
   * link is down. Edge work goes to the first region.
   */
  edges?: string[];
  root?: string;
  logger?: Logger;
}

/** A secured server with its authority, as started by {@link startSecureNats}. */
export interface SecureNats {
  /** The server (with regions: the first region's first node). */
  readonly server: NatsServer;
  /** With regions: the supercluster. */
  readonly supercluster?: NatsSupercluster;
  /** Client URLs of every node (of the regions; not the edges'). */
  readonly urls: string[];
  readonly authority: Authority;
  /** Each edge site's authority, by edge name. */
  readonly edgeAuthorities: Record<string, Authority>;
  readonly state: AuthorityState;
  /**
   * Creates a tenant: an account on the server (config reload), its
   * streams and buckets, and returns its first admin identity (kept in the
   * authority's directory as `<tenant>-admin.seed` unless given).
   */
  createTenant(name: string, admin?: Identity): Promise<Identity>;
  /** Issues an identity (a new one unless given) with a role in a tenant. */
  issue(tenant: string, role: IdentityRole, options?: { identity?: Identity; serves?: string[]; name?: string }): Promise<Identity>;
  /** Offers one capability of `from` to `to`. */
  exportCapability(from: string, capability: string, to: string): Promise<void>;
  /** Stops the authority and the server; removes the server's store when the launcher made it. */
  stop(): Promise<void>;
}

/**
 * Starts nats-server (2.10 or newer: auth callout) with one account per
 * tenant and the authority answering its callout.
 *
 * @throws {AgentBusError} `SERVER_TOO_OLD` on an older server: generate a
 *   static configuration instead (`agentbus authority config --static`).
 */
export async function startSecureNats(o: SecureNatsOptions): Promise<SecureNats> {
  const bin = o.server?.bin ?? findNatsServer();
  const version = natsServerVersion(bin);
  const [major, minor] = version.split(".").map(Number);
  if (major! < 2 || (major === 2 && minor! < 10)) {
    throw new AgentBusError("SERVER_TOO_OLD", `nats-server ${version} has no auth callout (2.10+); generate a static configuration with \`agentbus authority config --static\` instead`);
  }
  const state = new AuthorityState(o.dir);
  for (const t of o.tenants ?? ["default"]) state.addTenant(t, o.regions);
  if (o.edges?.length && !o.regions?.length) throw new AgentBusError("INVALID_INPUT", "edge sites link to a hub: give the hub's regions too");
  const auth = { nkeySeed: new TextDecoder().decode(state.keys.service.getSeed()) };
  // The accounts an edge links to the hub: the tenants', and the one holding the directory its authority mirrors.
  const linked = () => [AUTH_ACCOUNT, ...state.tenants().map((t) => t.name)];
  const supercluster = o.regions?.length
    ? await startSupercluster({ regions: o.regions, nodesPerRegion: o.nodesPerRegion, bin, edges: o.edges, edgesUnlinked: true, accounts: { config: state.serverConfig(o.root), auth, links: { accounts: linked(), password: state.leafPassword } } })
    : undefined;
  const servers = supercluster?.servers ?? [await startServer({ ...o.server, bin, config: state.serverConfig(o.root), auth })];
  const server = servers[0]!;
  const urls = servers.map((s) => s.url);
  const edges = Object.values(supercluster?.edges ?? {});
  const hub = { domain: HUB_DOMAIN, region: o.regions?.[0] ?? "" };
  const edgeAuthorities: Record<string, Authority> = {};
  const stopAll = async () => {
    await Promise.all(Object.values(edgeAuthorities).map((a) => a.stop()));
    await (supercluster ? supercluster.cleanup() : server.cleanup());
  };
  let authority: Authority;
  try {
    const common = {
      keys: state.keys, identity: state.identity, tenants: () => state.tenants(), root: o.root, logger: o.logger, trustRoot: (tenant: string) => admins(state.dir, tenant), leafPassword: state.leafPassword,
    };
    authority = await Authority.start({ servers: urls, ...common });
    // The hub's authority answers the edges' leaf connections; each edge's answers its own clients.
    for (const e of edges) await e.linked();
    for (const e of edges) edgeAuthorities[e.name] = await Authority.start({ servers: e.server.url, hub, ...common });
  } catch (err) {
    await stopAll();
    throw err;
  }
  // A node of a supercluster keeps its cluster and gateway blocks: the accounts are merged into what it runs with.
  // Edges get a leaf connection for each new account (nats-server 2.14+ adds leaf remotes on a reload), the hub a leaf user.
  const reload = async () => {
    if (edges.length > 0 && (major! < 2 || (major === 2 && minor! < 14))) {
      throw new AgentBusError("SERVER_TOO_OLD", `nats-server ${version} cannot add a leaf connection on a reload (2.14+): list the tenant when the edge sites start`);
    }
    const links = supercluster?.links && { ...supercluster.links, accounts: linked() };
    const accounts = state.serverConfig(o.root);
    for (const s of servers) await s.reconfigure(supercluster ? mergeConfig(s.config, accounts) : accounts);
    for (const e of edges) {
      await e.server.reconfigure(mergeConfig(mergeConfig(e.server.config, accounts), edgeBlock(e.name, e.link.port, true, links)));
      await e.linked();
    }
  };
  const secure: SecureNats = {
    server,
    ...(supercluster && { supercluster }),
    urls,
    authority,
    edgeAuthorities,
    state,
    async createTenant(name, admin) {
      const known = state.tenants().some((t) => t.name === name);
      state.addTenant(name, o.regions);
      if (!known) await reload();
      const identity = admin ?? Identity.fromFileOrCreate(join(state.dir, `${name}-admin.seed`));
      await setUpTenant({ authority, state, servers: urls, tenant: name, admin: identity, root: o.root, logger: o.logger });
      // Each edge: its plane, registry, outbox and policy mirrors, in its own domain.
      for (const a of Object.values(edgeAuthorities)) await (await a.tenant(name)).provision();
      return identity;
    },
    async issue(tenant, role, options = {}) {
      const identity = options.identity ?? Identity.generate();
      await authority.issue({ id: identity.id, tenant, role, serves: options.serves, name: options.name });
      return identity;
    },
    async exportCapability(from, capability, to) {
      state.exportCapability(from, capability, to);
      await reload();
    },
    async stop() {
      await authority.stop();
      await stopAll();
    },
  };
  return secure;
}

/** Inputs of {@link setUpTenant}. */
export interface TenantSetUp {
  /** The authority (running, or opened with {@link Authority.open}). */
  authority: Authority;
  state: AuthorityState;
  /** NATS URL(s) of the server, which already has the tenant's account. */
  servers: string | string[];
  tenant: string;
  /** The tenant's admin identity. */
  admin: Identity;
  root?: string;
  logger?: Logger;
}

/**
 * Provisions a tenant whose account the server already has: issues its
 * admin (role `admin` in the directory, recorded as the tenant's admin in
 * the authority's state), creates its streams and buckets through the
 * authority's own connection, and has the admin set the tenant's trust
 * root to itself when the tenant has none (a root naming other admins is
 * left alone). Resolves to the tenant's trust root afterwards.
 */
export async function setUpTenant(t: TenantSetUp): Promise<string[]> {
  const { authority, state, tenant, admin } = t;
  await authority.issue({ id: admin.id, tenant, role: "admin", name: `${tenant} admin` });
  saveAdmins(state.dir, tenant, admin.id);
  const bus = await authority.tenant(tenant);
  await bus.provision();
  const regions = state.tenants().find((x) => x.name === tenant)?.regions;
  const adminBus = await connect({
    servers: t.servers, root: t.root, tenant, identity: admin, auth: { nkey: true }, trustRoot: admins(state.dir, tenant), logger: t.logger, name: `agentbus tenant ${tenant} set-up`,
    ...(regions?.length && { region: regions[0], regions }),
  });
  try {
    const current = adminBus.acl.admins();
    if (current.length === 0 || (current.length === 1 && current[0] === admin.id)) await adminBus.acl.setTrustRoot([admin.id]);
    return adminBus.acl.admins();
  } finally {
    await adminBus.close();
  }
}

function adminsFile(dir: string): string {
  return join(dir, "admins.json");
}

/** The admins recorded for `tenant` (its trust root), if any. */
export function admins(dir: string, tenant: string): string[] | undefined {
  const file = adminsFile(dir);
  if (!existsSync(file)) return undefined;
  return (JSON.parse(readFileSync(file, "utf8")) as Record<string, string[]>)[tenant];
}

function saveAdmins(dir: string, tenant: string, id: string): void {
  const file = adminsFile(dir);
  const all = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Record<string, string[]>) : {};
  all[tenant] = [...new Set([...(all[tenant] ?? []), id])];
  writeFileSync(file, `${JSON.stringify(all, null, 2)}\n`, { mode: 0o600 });
}
