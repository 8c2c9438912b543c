/**
 * The secured side of the benchmarks: a nats-server with one account per
 * tenant and the agentbus authority answering its auth callout
 * (`startSecureNats`), one tenant, an issued agent serving one capability,
 * an issued caller, and a signed ACL rule that grants the caller that
 * capability at that agent. Signed policy, the shared replay memory and
 * per-role server permissions are all in force, as in production.
 *
 * The benchmark process keeps the authority (it answers connects only;
 * idle while calls run) and hands the agent's identity to its child
 * process through the environment ({@link secureChildEnv}); the child builds
 * its connect options with {@link benchConnectOptions}.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startSecureNats, type SecureNats } from "../authority/index.js";
import { connect, createLogger, Identity, type Bus, type ConnectOptions } from "../core/index.js";

/** A secured server with an issued agent and caller, granted one capability. */
export interface SecureBench {
  readonly nats: SecureNats;
  readonly url: string;
  readonly tenant: string;
  /** The tenant's admin (trust root, signer of the grant). */
  readonly admin: Identity;
  /** Issued with role `agent`, serving the capability. */
  readonly agent: Identity;
  /** Issued with role `caller`, granted the capability at {@link agent}. */
  readonly caller: Identity;
  /** ACL revision of the grant: the agent waits for it before serving. */
  readonly revision: number;
  /** Connects the caller (nkey auth, trust root pinned, ACL enforced). */
  connectCaller(extra?: Partial<ConnectOptions>): Promise<Bus>;
  /** Stops the authority and the server, removes the authority's files. */
  stop(): Promise<void>;
}

const quiet = () => createLogger({ level: "error" });

/**
 * Starts a secured server for `tenant` with an agent issued to serve
 * `capability` and a caller granted it. Needs nats-server 2.10+ (auth
 * callout); `startSecureNats` throws `SERVER_TOO_OLD` otherwise.
 */
export async function startSecureBench(tenant: string, capability: string): Promise<SecureBench> {
  const dir = await mkdtemp(join(tmpdir(), "agentbus-bench-secure-"));
  let nats: SecureNats | undefined;
  try {
    nats = await startSecureNats({ dir, tenants: [tenant], logger: quiet() });
    const url = nats.server.url;
    const admin = await nats.createTenant(tenant);
    const agent = await nats.issue(tenant, "agent", { serves: [capability], name: "bench-agent" });
    const caller = await nats.issue(tenant, "caller", { name: "bench-caller" });
    const adminBus = await connect({ servers: url, tenant, identity: admin, auth: { nkey: true }, trustRoot: [admin.id], name: "bench-admin", logger: quiet() });
    let revision: number;
    try {
      revision = await adminBus.acl.putRule("bench-caller", { source: caller.id, target: agent.id, capabilities: [capability] });
    } finally {
      await adminBus.close();
    }
    const started = nats;
    return {
      nats: started,
      url,
      tenant,
      admin,
      agent,
      caller,
      revision,
      connectCaller: async (extra = {}) => {
        const bus = await connect({ servers: url, tenant, identity: caller, auth: { nkey: true }, trustRoot: [admin.id], logger: quiet(), ...extra });
        if (!(await bus.acl.applied(revision))) throw new Error(`caller did not see ACL revision ${revision} in 5 s`);
        return bus;
      },
      stop: async () => {
        await started.stop().catch(() => {});
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await nats?.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Environment for a child process that connects as the secured agent (see {@link benchConnectOptions}). */
export function secureChildEnv(s: SecureBench): NodeJS.ProcessEnv {
  return {
    ...process.env,
    BENCH_CHILD_SECURE: "1",
    AGENTBUS_SEED: s.agent.exportSeed(),
    BENCH_TRUST_ROOT: s.admin.id,
    BENCH_ACL_REVISION: String(s.revision),
  };
}

/** True in a child started with {@link secureChildEnv}. */
export const secureChild = (): boolean => process.env.BENCH_CHILD_SECURE === "1";

/**
 * Connect options of a benchmark child: on a secured server, the issued
 * identity from `AGENTBUS_SEED` with nkey auth, the trust root pinned and
 * the ACL enforced; otherwise the plain server's `insecureAllowAll`.
 */
export function benchConnectOptions(base: ConnectOptions): ConnectOptions {
  if (!secureChild()) return { ...base, insecureAllowAll: true };
  return { ...base, identity: Identity.fromEnv(), auth: { nkey: true }, trustRoot: (process.env.BENCH_TRUST_ROOT ?? "").split(",").filter(Boolean) };
}

/** In a secured child: waits until the grant is in force at `bus` (no-op on a plain server). */
export async function awaitGrant(bus: Bus): Promise<void> {
  const revision = Number(process.env.BENCH_ACL_REVISION);
  if (!secureChild() || !Number.isFinite(revision)) return;
  if (!(await bus.acl.applied(revision, 15_000))) throw new Error(`ACL revision ${revision} not applied in 15 s`);
}
