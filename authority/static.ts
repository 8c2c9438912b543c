/**
 * The static form of the authority, for nats-server without auth callout
 * (2.9.10, the supported floor): the same accounts, and every issued
 * identity written into the config with its role's permissions, computed
 * from the identity directory and each tenant's signed ACL at the moment
 * the config is generated. Regenerate and reload after issuing, revoking
 * or granting (`agentbus authority config --static`).
 */
import { connect, grantedCapabilities, type Identity, type Logger } from "../core/index.js";
import { authorityConfig, type StaticUser } from "./config.js";
import type { AuthorityState } from "./local.js";
import { Authority } from "./service.js";

/**
 * The authority's identity inside one tenant's account on a static
 * configuration, where a user key belongs to one account only: derived
 * from the authority's identity, so only the authority has it.
 */
export function authorityIn(identity: Identity, tenant: string): Identity {
  return identity.derive(`tenant admin ${tenant}`);
}

/** Options of {@link staticServerConfig}. */
export interface StaticConfigOptions {
  state: AuthorityState;
  /**
   * A server already running a static configuration of this authority:
   * its directory and the tenants' ACLs give the identities and grants.
   * Absent (first start): only the authority's own admin users.
   */
  servers?: string | string[];
  root?: string;
  logger?: Logger;
}

/**
 * The `accounts` and `system_account` blocks of a static configuration:
 * one account per tenant, with the authority's admin user in each and,
 * when `servers` is given, every identity issued and not revoked or
 * rotated, with the capabilities its tenant's ACL grants it.
 */
export async function staticServerConfig(o: StaticConfigOptions): Promise<Record<string, unknown>> {
  const { state } = o;
  const tenants = state.tenants();
  const users: StaticUser[] = tenants.map((t) => ({ tenant: t.name, id: authorityIn(state.identity, t.name).id, role: "admin" as const }));
  if (o.servers) {
    const authority = await Authority.open({ servers: o.servers, keys: state.keys, identity: state.identity, tenants: () => state.tenants(), root: o.root, logger: o.logger });
    try {
      for (const t of tenants) {
        const records = authority.directory.list(t.name).filter((r) => !r.revokedAt && !r.rotatedTo);
        if (records.length === 0) continue;
        const bus = await connect({ servers: o.servers, root: o.root, tenant: t.name, identity: authorityIn(state.identity, t.name), logger: o.logger, name: "agentbus-authority static config" });
        try {
          const policy = bus.acl.policy();
          for (const r of records) {
            users.push({ tenant: t.name, id: r.id, role: r.role, serves: r.serves, invokes: r.role === "agent" || r.role === "caller" ? grantedCapabilities(policy, r.id) : undefined });
          }
        } finally {
          await bus.close();
        }
      }
    } finally {
      await authority.stop();
    }
  }
  return authorityConfig({ keys: state.keys, tenants, mode: "static", users, root: o.root });
}
