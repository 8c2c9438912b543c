/**
 * The authority service: nats-server's auth callout for agentbus. Every
 * client connection (except the authority's own service users) is handed
 * to it; it checks that the client holds the private key of the identity
 * it names (the signature over the server's nonce), looks the identity up
 * in the directory, and answers with a user claim that puts the
 * connection in its tenant's account with its role's permissions,
 * computed at that moment from the tenant's signed ACL. Revoking an
 * identity refuses its next connect and closes the open ones.
 *
 * Run it next to nats-server (`agentbus authority serve`, or inside
 * `agentbus up`); several replicas share the requests (queue group).
 */
import { connect as natsConnect, nkeyAuthenticator } from "@nats-io/transport-node";
import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import { fromPublic } from "@nats-io/nkeys";
import { decode, encodeAuthorizationResponse, encodeUser, type User } from "@nats-io/jwt";
import {
  AgentBusError,
  connect,
  createLogger,
  grantedCapabilities,
  rolePermissions,
  type Bus,
  type Identity,
  type Logger,
  type NatsPermissions,
} from "../core/index.js";
import { AUTH_ACCOUNT, importsOf, type AuthorityKeys, type TenantSpec } from "./config.js";
import { timingSafeEqual } from "node:crypto";
import { leafUser } from "../nats/index.js";
import { Directory, type IdentityRecord } from "./directory.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The subject nats-server sends authorization requests to (in the callout account). */
export const AUTH_REQUEST_SUBJECT = "$SYS.REQ.USER.AUTH";

/** Options of {@link Authority.start}. */
export interface AuthorityOptions {
  /** NATS URL(s) of the server(s) configured with {@link authorityConfig}. */
  servers: string | string[];
  keys: AuthorityKeys;
  /**
   * The authority's own identity: it connects to each tenant as that
   * tenant's admin (to read its policy and provision it). Keep its seed
   * with the authority's keys.
   */
  identity: Identity;
  /** The tenants (accounts) the server is configured with; read on every request, so a reload is seen at once. */
  tenants: () => readonly TenantSpec[];
  /** Subject root (default `mesh`). */
  root?: string;
  /** Replicas of the directory bucket (default 1). */
  replicas?: number;
  /**
   * The authority of an edge site's server: the hub's JetStream domain and
   * the region edge work goes to. Its directory is a mirror of the hub's,
   * its tenant connections are the edge's (`ConnectOptions.hub`), and the
   * permissions it grants are an edge's (`hub` of {@link rolePermissions}).
   */
  hub?: { domain: string; region: string };
  /**
   * The password of edge sites' leaf connections: a leaf connection signing
   * in as `leaf-<account>` with it is put in that account (the tenants' or
   * `AUTH`) with every right, as a leaf connection only; the edge's own
   * server confines its clients. Absent: leaf connections are refused.
   */
  leafPassword?: string;
  /** Trust root pinned for every tenant (admins' ids), passed to the tenant connections. */
  trustRoot?: (tenant: string) => string[] | undefined;
  logger?: Logger;
}

/** The prefix of an edge's leaf users (see {@link leafUser}). */
const LEAF_USER_PREFIX = leafUser("");

/** Why a connection was refused, as told to nats-server (and so to its log). */
class Refusal extends Error {}

/**
 * A running authority: answers the server's authorization requests and
 * keeps the directory. {@link Authority.start} starts one.
 */
export class Authority {
  readonly directory: Directory;
  readonly #auth: NatsConnection;
  readonly #system: NatsConnection;
  readonly #o: AuthorityOptions;
  readonly #log: Logger;
  readonly #tenants = new Map<string, Promise<Bus>>();
  #sub?: Subscription;

  private constructor(auth: NatsConnection, system: NatsConnection, directory: Directory, o: AuthorityOptions, log: Logger) {
    this.#auth = auth;
    this.#system = system;
    this.directory = directory;
    this.#o = o;
    this.#log = log;
  }

  /** Connects the service users, opens the directory and starts answering. */
  static async start(o: AuthorityOptions): Promise<Authority> {
    const authority = await Authority.#connect(o, true);
    const log = authority.#log;
    authority.#sub = authority.#auth.subscribe(AUTH_REQUEST_SUBJECT, {
      queue: "agentbus-authority",
      callback: (err, msg) => {
        if (!err) void authority.#answer(msg);
      },
    });
    await authority.#auth.flush();
    // Each tenant's policy is read through an admin connection: open them now, not inside the first callout.
    for (const t of o.tenants()) void authority.tenant(t.name).catch((err: unknown) => log.warn({ tenant: t.name, err: String(err) }, "cannot read the tenant's policy yet"));
    log.info({ tenants: o.tenants().map((t) => t.name) }, "authority answering authorization requests");
    return authority;
  }

  /**
   * Connects the service users and opens the directory without answering
   * authorization requests: for tools that issue, revoke and rotate
   * identities next to a running authority (`agentbus identity …`). Its
   * {@link Authority.revoke} and {@link Authority.rotate} close the
   * connections themselves; {@link Authority.stop} closes it.
   *
   * @throws the connection error when the server refuses the service keys
   *   (a server not configured with this authority's {@link authorityConfig}).
   */
  static open(o: AuthorityOptions): Promise<Authority> {
    return Authority.#connect(o, false);
  }

  static async #connect(o: AuthorityOptions, watch: boolean): Promise<Authority> {
    const log = (o.logger ?? createLogger()).child({ component: "authority" });
    const base = { servers: o.servers, maxReconnectAttempts: -1, reconnectTimeWait: 500 };
    const auth = await natsConnect({ ...base, name: "agentbus-authority", authenticator: nkeyAuthenticator(o.keys.service.getSeed()) });
    let system: NatsConnection;
    try {
      system = await natsConnect({ ...base, name: "agentbus-authority-system", authenticator: nkeyAuthenticator(o.keys.system.getSeed()) });
    } catch (err) {
      await auth.close().catch(() => {});
      throw err;
    }
    let authority: Authority | undefined;
    let directory: Directory;
    try {
      directory = await Directory.open(auth, {
        replicas: o.replicas,
        hub: o.hub?.domain,
        onChange: watch
          ? (id, now, before) => {
              if (now?.revokedAt && !before?.revokedAt) void authority?.disconnect(id);
              if (now?.rotatedTo && !before?.rotatedTo) void authority?.disconnect(id);
            }
          : undefined,
      });
    } catch (err) {
      await Promise.all([auth.close().catch(() => {}), system.close().catch(() => {})]);
      throw err;
    }
    authority = new Authority(auth, system, directory, o, log);
    return authority;
  }

  /**
   * Issues an identity: records its tenant and role (and, for an agent,
   * the capabilities it may serve). Takes effect on its next connect.
   */
  async issue(record: Omit<IdentityRecord, "issuedAt"> & { issuedAt?: number }): Promise<IdentityRecord> {
    if (!this.#o.tenants().some((t) => t.name === record.tenant)) {
      throw new AgentBusError("INVALID_INPUT", `tenant ${record.tenant} does not exist on this server (agentbus tenant create ${record.tenant})`);
    }
    const full = { ...record, issuedAt: record.issuedAt ?? Date.now() };
    await this.directory.put(full);
    return full;
  }

  /**
   * Revokes an identity: its next connect is refused and its open
   * connections are closed. Resolves to the record and the number of
   * connections that were open at revocation and are closed now (by this
   * call or by a running authority that saw the revocation first).
   */
  async revoke(id: string, reason = "revoked"): Promise<IdentityRecord & { closed: number }> {
    const open = await this.#connections(id);
    const record = await this.directory.revoke(id, reason);
    const closed = await this.disconnect(id, open);
    return { ...record, closed };
  }

  /**
   * Moves an identity to a new key: the new id gets the old one's tenant,
   * role and capabilities; the old id is refused from now on.
   */
  async rotate(oldId: string, newId: string): Promise<IdentityRecord> {
    const old = this.directory.get(oldId);
    if (!old || old.revokedAt) throw new AgentBusError("INVALID_INPUT", `identity ${oldId} is not issued or is revoked`);
    const next = await this.issue({ ...old, id: newId, issuedAt: Date.now(), rotatedTo: undefined });
    await this.directory.put({ ...old, rotatedTo: newId });
    await this.disconnect(oldId);
    return next;
  }

  /**
   * Closes every open connection of `id` on every server (through the
   * system account: connection lists, then a kick per connection).
   * Resolves to the number of connections closed, counting those in
   * `known` (connections listed earlier, which may have been closed since).
   */
  async disconnect(id: string, known: ReadonlyMap<string, { server: string; cid: number }> = new Map()): Promise<number> {
    const all = new Map(known);
    try {
      const open = await this.#connections(id);
      for (const [key, c] of open) all.set(key, c);
      await Promise.all(
        [...open.values()].map((c) => this.#system.request(`$SYS.REQ.SERVER.${c.server}.KICK`, JSON.stringify({ cid: c.cid }), { timeout: 2000 }).catch(() => undefined)),
      );
    } catch (err) {
      this.#log.warn({ err: String(err), id }, "could not close the connections of a revoked identity");
    }
    if (all.size) this.#log.info({ id, closed: all.size }, "closed the connections of a revoked identity");
    return all.size;
  }

  /** The open connections of `id` on every server, keyed by server and client id. */
  async #connections(id: string): Promise<Map<string, { server: string; cid: number }>> {
    const found = new Map<string, { server: string; cid: number }>();
    try {
      // Every server answers: wait up to 5 s for the first reply (a loaded server is slow), then until 500 ms pass without another.
      const replies = await this.#system.requestMany("$SYS.REQ.SERVER.PING.CONNZ", JSON.stringify({ auth: true, limit: 100_000 }), { strategy: "stall", stall: 500, maxWait: 5000 });
      for await (const m of replies) {
        const { server, data } = m.json<{ server: { id: string }; data?: { connections?: Array<{ cid: number; authorized_user?: string; nkey?: string }> } }>();
        for (const c of data?.connections ?? []) {
          if (c.authorized_user === id || c.nkey === id) found.set(`${server.id}/${c.cid}`, { server: server.id, cid: c.cid });
        }
      }
    } catch (err) {
      this.#log.warn({ err: String(err), id }, "could not list the connections of an identity");
    }
    return found;
  }

  /** Stops answering and closes every connection. */
  async stop(): Promise<void> {
    this.#sub?.unsubscribe();
    this.directory.stop();
    await Promise.all([...this.#tenants.values()].map(async (b) => (await b.catch(() => undefined))?.close()));
    await Promise.all([this.#auth.drain().catch(() => {}), this.#system.drain().catch(() => {})]);
  }

  /** The authority's admin connection to `tenant` (opened once, on first need). */
  tenant(tenant: string): Promise<Bus> {
    let bus = this.#tenants.get(tenant);
    if (!bus) {
      // A federated tenant: the authority's connection is federated too, so its set-up provisions every region.
      const regions = this.#o.tenants().find((t) => t.name === tenant)?.regions;
      bus = connect({
        servers: this.#o.servers,
        tenant,
        ...(this.#o.hub ? { hub: this.#o.hub } : regions?.length && { region: regions[0], regions }),
        root: this.#o.root,
        identity: this.#o.identity,
        auth: { nkey: true, user: tenant },
        trustRoot: this.#o.trustRoot?.(tenant),
        name: `agentbus-authority ${tenant}`,
        logger: this.#log,
      });
      bus.then(
        // A revocation signed by the tenant's admin closes the identity's connections, as a directory revocation does.
        (b) => b.onRevoked((id) => void this.disconnect(id)),
        () => this.#tenants.delete(tenant),
      );
      this.#tenants.set(tenant, bus);
    }
    return bus;
  }

  async #answer(msg: Msg): Promise<void> {
    let request: AuthRequest;
    try {
      request = decode<AuthRequest>(dec.decode(msg.data)).nats as AuthRequest;
    } catch (err) {
      this.#log.warn({ err: String(err) }, "undecodable authorization request");
      return;
    }
    const userKey = fromPublic(request.user_nkey);
    const serverKey = fromPublic(request.server_id.id);
    const issuer = this.#o.keys.issuer;
    let response: string;
    try {
      const { account, permissions, id, leaf } = this.#leaf(request) ?? await this.#decide(request);
      const user: Partial<User> = {
        pub: permissions.pub, sub: permissions.sub, ...(permissions.resp ? { resp: permissions.resp } : {}), ...(leaf && { allowed_connection_types: ["LEAFNODE"] }),
      };
      const jwt = await encodeUser(id, userKey, issuer, user, { aud: account });
      response = await encodeAuthorizationResponse(userKey, serverKey, issuer, { jwt }, {});
    } catch (err) {
      const reason = err instanceof Refusal || err instanceof AgentBusError ? err.message : `authorization failed: ${String(err)}`;
      this.#log.warn({ id: request.connect_opts?.nkey, reason }, "connection refused");
      response = await encodeAuthorizationResponse(userKey, serverKey, issuer, { error: reason }, {});
    }
    msg.respond(enc.encode(response));
  }

  /**
   * An edge site's leaf connection (user `leaf-<account>` with the leaf
   * password): the account, every right, and a claim valid for leaf
   * connections only; undefined for anything else.
   */
  #leaf(r: AuthRequest): { account: string; permissions: NatsPermissions; id: string; leaf: true } | undefined {
    const user = r.connect_opts?.user;
    if (!user?.startsWith(LEAF_USER_PREFIX)) return undefined;
    const account = user.slice(LEAF_USER_PREFIX.length);
    const expected = this.#o.leafPassword;
    const given = r.connect_opts?.pass ?? "";
    if (expected === undefined || given.length !== expected.length || !timingSafeEqual(Buffer.from(given), Buffer.from(expected))) throw new Refusal(`leaf connection ${user}: wrong password`);
    if (account !== AUTH_ACCOUNT && !this.#o.tenants().some((t) => t.name === account)) throw new Refusal(`leaf connection ${user}: no account ${account}`);
    // The server says what connects; a client with the password is still not a leaf node.
    if (r.client_info?.kind?.toLowerCase() !== "leafnode") throw new Refusal(`${user} signs in as a leaf node only, not as ${r.client_info?.kind ?? "an unknown kind"}`);
    const all = { allow: [">"], deny: [] };
    return { account, id: r.user_nkey, permissions: { pub: all, sub: all }, leaf: true };
  }

  async #decide(r: AuthRequest): Promise<{ account: string; permissions: NatsPermissions; id: string; leaf?: true }> {
    const id = r.connect_opts?.nkey;
    const sig = r.connect_opts?.sig;
    const nonce = r.client_info?.nonce;
    if (!id || !sig || !nonce) throw new Refusal("agentbus accepts an identity's key only (nkey challenge): connect with the identity's seed");
    let valid = false;
    try {
      valid = fromPublic(id).verify(enc.encode(nonce), Buffer.from(sig, "base64"));
    } catch { /* not a user key */ }
    if (!valid) throw new Refusal(`the signature does not prove the key of ${id}`);
    const requested = r.connect_opts?.user;
    const tenants = this.#o.tenants();
    if (id === this.#o.identity.id) {
      if (!requested || !tenants.some((t) => t.name === requested)) throw new Refusal(`unknown tenant ${JSON.stringify(requested)}`);
      return { account: requested, id, permissions: rolePermissions({ root: this.#o.root, tenant: requested, id, role: "admin" }) };
    }
    const record = await this.directory.lookup(id);
    if (!record) throw new Refusal(`identity ${id} is not issued`);
    if (record.revokedAt) throw new Refusal(`identity ${id} is revoked`);
    if (record.rotatedTo) throw new Refusal(`identity ${id} rotated to ${record.rotatedTo}`);
    if (requested && requested !== record.tenant) throw new Refusal(`identity ${id} belongs to tenant ${record.tenant}, not ${requested}`);
    if (!tenants.some((t) => t.name === record.tenant)) throw new Refusal(`tenant ${record.tenant} is not configured on this server`);
    const spec = tenants.find((t) => t.name === record.tenant)!;
    let invokes: string[] = [];
    if (record.role === "agent" || record.role === "caller") {
      const bus = await this.tenant(record.tenant);
      if (bus.isRevoked(id)) throw new Refusal(`identity ${id} is revoked in tenant ${record.tenant}`);
      invokes = grantedCapabilities(bus.acl.policy(), id);
    }
    return {
      account: record.tenant,
      id,
      permissions: rolePermissions({
        root: this.#o.root, tenant: record.tenant, id, role: record.role, serves: record.serves, invokes, imports: importsOf(tenants, record.tenant),
        ...(this.#o.hub ? { hub: this.#o.hub } : { regions: spec.regions }),
      }),
    };
  }
}

/** The parts of nats-server's authorization request claim that the authority reads. */
interface AuthRequest {
  server_id: { id: string; name?: string };
  user_nkey: string;
  client_info?: { nonce?: string; host?: string; name?: string; kind?: string };
  connect_opts?: { nkey?: string; sig?: string; user?: string; pass?: string; name?: string };
}
