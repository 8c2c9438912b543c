/**
 * The authority's keys and the nats-server configuration that makes each
 * tenant a NATS account: the `AUTH` account (the authority's own service
 * user and its identity directory), the system account (`SYS`, used to
 * disconnect revoked identities), one account per tenant with JetStream,
 * and the explicit exports and imports of capabilities between tenants.
 *
 * Two modes, one permission model (`core/security/permissions.ts`):
 * - `callout` (nats-server 2.10+): every client connection is handed to the
 *   authority service, which checks the identity's key and answers with the
 *   tenant account and permissions computed live;
 * - `static` (older servers): the same permissions written into the config
 *   for every issued identity; regenerate and reload after each change.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createAccount, createUser, fromSeed, type KeyPair } from "@nats-io/nkeys";
import { Subjects, rolePermissions, type NatsPermissions, type PermissionInput } from "../core/index.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The authority's key material, kept in its directory (files mode 0600). */
export interface AuthorityKeys {
  /** Account key (`A…`) that signs the user claims the service issues; the server trusts it as the callout issuer. */
  issuer: KeyPair;
  /** User key of the authority service in the `AUTH` account (exempt from the callout). */
  service: KeyPair;
  /** User key in the system account, to find and disconnect revoked identities. */
  system: KeyPair;
}

function keyFile(dir: string, name: string, create: () => KeyPair): KeyPair {
  const path = join(dir, `${name}.nk`);
  if (existsSync(path)) return fromSeed(enc.encode(readFileSync(path, "utf8").trim()));
  const kp = create();
  writeFileSync(path, `${dec.decode(kp.getSeed())}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return kp;
}

/** Loads the authority's keys from `dir`, creating the missing ones. */
export function loadAuthorityKeys(dir: string): AuthorityKeys {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return {
    issuer: keyFile(dir, "issuer", createAccount),
    service: keyFile(dir, "service", createUser),
    system: keyFile(dir, "system", createUser),
  };
}

/** A tenant as the server sees it: an account, and what it shares. */
export interface TenantSpec {
  /** Tenant name (`[a-z0-9_-]+`), also the account name. */
  name: string;
  /** Capabilities this tenant offers to other tenants: `{capability, to: [tenant…]}`. */
  exports?: Array<{ capability: string; to: string[] }>;
  /**
   * The regions the tenant is federated across (its buses connect with
   * these `regions`): identities get the rights of every region's registry
   * and task plane (see `PermissionInput.regions`).
   */
  regions?: string[];
}

/** An identity written into a static configuration (servers without auth callout). */
export interface StaticUser extends Omit<PermissionInput, "root" | "tenant"> {
  tenant: string;
}

/** Inputs of {@link authorityConfig}. */
export interface AuthorityConfigInput {
  keys: AuthorityKeys;
  tenants: readonly TenantSpec[];
  /** `callout` (2.10+) or `static` (any server; needs `users`). */
  mode: "callout" | "static";
  /** Static mode: every identity with its role (permissions computed here). */
  users?: readonly StaticUser[];
  /** Subject root (default `mesh`). */
  root?: string;
}

/** The capabilities imported into `tenant` from the others' exports. */
export function importsOf(tenants: readonly TenantSpec[], tenant: string): Array<{ tenant: string; capability: string }> {
  return tenants.flatMap((t) => (t.exports ?? []).filter((e) => e.to.includes(tenant)).map((e) => ({ tenant: t.name, capability: e.capability })));
}

/** nats-server's spelling of {@link NatsPermissions}. */
export function serverPermissions(p: NatsPermissions): Record<string, unknown> {
  return {
    publish: { allow: p.pub.allow, deny: p.pub.deny.length ? p.pub.deny : undefined },
    subscribe: { allow: p.sub.allow, deny: p.sub.deny.length ? p.sub.deny : undefined },
    allow_responses: p.resp ? { max: p.resp.max } : undefined,
  };
}

/** Reserved account names; tenant names are lower case, so they never clash. */
export const AUTH_ACCOUNT = "AUTH";
/** The system account's name. */
export const SYSTEM_ACCOUNT = "SYS";

/**
 * The `accounts`, `system_account` and `authorization` blocks of a
 * nats-server config (merge them into the rest: listen, JetStream, cluster).
 */
export function authorityConfig(input: AuthorityConfigInput): Record<string, unknown> {
  const accounts: Record<string, unknown> = {
    [AUTH_ACCOUNT]: { jetstream: "enabled", users: [{ nkey: input.keys.service.getPublicKey() }] },
    [SYSTEM_ACCOUNT]: { users: [{ nkey: input.keys.system.getPublicKey() }] },
  };
  for (const t of input.tenants) {
    const prefix = new Subjects(input.root, t.name).prefix;
    const imports = importsOf(input.tenants, t.name);
    const users = input.mode === "static"
      ? (input.users ?? []).filter((u) => u.tenant === t.name).map((u) => ({
          nkey: u.id,
          permissions: serverPermissions(rolePermissions({ ...u, root: input.root, tenant: t.name, imports, regions: t.regions })),
        }))
      : undefined;
    accounts[t.name] = {
      jetstream: "enabled",
      users: users?.length ? users : undefined,
      exports: t.exports?.length ? t.exports.map((e) => ({ service: `${prefix}.cap.${e.capability}`, accounts: e.to })) : undefined,
      imports: imports.length
        ? imports.map((i) => ({ service: { account: i.tenant, subject: `${new Subjects(input.root, i.tenant).prefix}.cap.${i.capability}` } }))
        : undefined,
    };
  }
  return {
    accounts,
    system_account: SYSTEM_ACCOUNT,
    authorization: input.mode === "callout"
      ? {
          // Seconds a client may take to authenticate, the callout's answer included (a busy machine needs more than the default).
          timeout: 10,
          auth_callout: { issuer: input.keys.issuer.getPublicKey(), auth_users: [input.keys.service.getPublicKey(), input.keys.system.getPublicKey()], account: AUTH_ACCOUNT },
        }
      : undefined,
  };
}
