/**
 * Launching a supercluster: one cluster per region, joined by gateways.
 * Gateways need a system account, so the config also defines accounts:
 * `SYS` (system) and `APP` (where clients and JetStream live).
 */
import { startCluster, type NatsCluster } from "./cluster.js";
import { mergeConfig } from "./config.js";
import { assertAllRunning, waitForMetaLeader } from "./meta.js";
import { monitorJson } from "./monitor.js";
import { pollUntil } from "./poll.js";
import { HOST, PortInUseError, freePorts, retryOnPortClash } from "./ports.js";
import type { UserPassword as UserPass } from "./ready.js";
import type { NatsServer } from "./server.js";

/** Credentials of the application account clients use. */
export const APP_USER: UserPass = { user: "app", pass: "app" };
/** Credentials of the system account (monitoring/ops requests). */
export const SYS_USER: UserPass = { user: "sys", pass: "sys" };

/** Options for {@link startSupercluster}. */
export interface SuperclusterOptions {
  /** Region (= cluster = gateway) names, default `["east", "west"]`. */
  regions?: string[];
  /** Nodes per region (default 1). */
  nodesPerRegion?: number;
  /** Enable JetStream (default true), for the APP account. */
  jetstream?: boolean;
  /** Extra config deep-merged into every node. */
  config?: Record<string, unknown>;
  debug?: boolean;
  bin?: string;
  /** Timeout of each readiness phase: regions, gateways, meta leader (default 90 s). */
  readyTimeoutMs?: number;
}

/** A running supercluster started by {@link startSupercluster}. */
export interface NatsSupercluster {
  readonly regions: string[];
  /** Each region's cluster, by region name. */
  readonly clusters: Record<string, NatsCluster>;
  /** All nodes, region by region. */
  readonly servers: NatsServer[];
  /** Client URLs of all nodes. */
  readonly urls: string[];
  /** Credentials clients must use (the APP account). */
  readonly auth: UserPass;
  /** System account credentials. */
  readonly systemAuth: UserPass;
  stop(): Promise<void>;
  cleanup(): Promise<void>;
}

/**
 * The accounts part of a supercluster node's config, as a pure function so
 * the example files come from the same code.
 */
export function accountsBlock(jetstream: boolean): Record<string, unknown> {
  return {
    accounts: {
      SYS: { users: [{ user: SYS_USER.user, password: SYS_USER.pass }] },
      APP: {
        jetstream: jetstream ? "enabled" : undefined,
        users: [{ user: APP_USER.user, password: APP_USER.pass }],
      },
    },
    system_account: "SYS",
  };
}

/** Inputs of {@link gatewayBlock}. */
export interface GatewayBlockInput {
  /** This node's region; must equal its cluster name. */
  name: string;
  gatewayPort: number;
  /** Gateway ports of every region's nodes, by region (own region ignored). */
  regions: Record<string, number[]>;
}

/** The `gateway { ... }` block for one node, listing every other region. */
export function gatewayBlock({ name, gatewayPort, regions }: GatewayBlockInput): Record<string, unknown> {
  return {
    gateway: {
      name,
      listen: `${HOST}:${gatewayPort}`,
      gateways: Object.entries(regions)
        .filter(([region]) => region !== name)
        .map(([region, ports]) => ({ name: region, urls: ports.map((p) => `nats://${HOST}:${p}`) })),
    },
  };
}

interface Gatewayz {
  outbound_gateways?: Record<string, unknown>;
  inbound_gateways?: Record<string, unknown>;
}

/** Waits until every node has outbound and inbound gateway links to every other region. */
async function waitForGateways(clusters: NatsCluster[], timeoutMs: number): Promise<void> {
  const servers = clusters.flatMap((c) => c.servers);
  await pollUntil(
    async () => {
      assertAllRunning(servers);
      for (const cluster of clusters) {
        const others = clusters.filter((c) => c !== cluster).map((c) => c.name);
        for (const s of cluster.servers) {
          const gw = await monitorJson<Gatewayz>(s.monitorUrl, "/gatewayz");
          const missing = others.filter((r) => !gw.outbound_gateways?.[r] || !gw.inbound_gateways?.[r]);
          if (missing.length) throw new Error(`${s.name} lacks gateway links to ${missing.join(", ")}`);
        }
      }
      return true;
    },
    { timeoutMs, intervalMs: 200, what: "gateways between all regions" },
  );
}

async function attempt(options: SuperclusterOptions): Promise<NatsSupercluster> {
  const regions = options.regions ?? ["east", "west"];
  const perRegion = options.nodesPerRegion ?? 1;
  const jetstream = options.jetstream ?? true;
  const timeoutMs = options.readyTimeoutMs ?? 90_000;
  const ports = await freePorts(regions.length * perRegion);
  const gatewayPorts = Object.fromEntries(regions.map((r, i) => [r, ports.slice(i * perRegion, (i + 1) * perRegion)]));
  const config = mergeConfig(accountsBlock(jetstream), options.config);
  // Regions start together: JetStream's meta group spans all of them.
  const results = await Promise.allSettled(
    regions.map((region) =>
      startCluster(perRegion, {
        name: region,
        jetstream,
        waitForJetStream: false,
        config,
        nodeConfig: (i) => gatewayBlock({ name: region, gatewayPort: gatewayPorts[region]![i]!, regions: gatewayPorts }),
        auth: APP_USER,
        readyTimeoutMs: timeoutMs,
        ...(options.debug !== undefined && { debug: options.debug }),
        ...(options.bin !== undefined && { bin: options.bin }),
      }),
    ),
  );
  const clusters = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const cleanup = async () => {
    await Promise.all(clusters.map((c) => c.cleanup()));
  };
  try {
    const errors = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    if (errors.length) throw errors.find((e) => e instanceof PortInUseError) ?? errors[0];
    const servers = clusters.flatMap((c) => c.servers);
    await waitForGateways(clusters, timeoutMs);
    if (jetstream) await waitForMetaLeader(servers, timeoutMs);
    return {
      regions,
      clusters: Object.fromEntries(clusters.map((c) => [c.name, c])),
      servers,
      urls: servers.map((s) => s.url),
      auth: APP_USER,
      systemAuth: SYS_USER,
      stop: async () => {
        await Promise.all(clusters.map((c) => c.stop()));
      },
      cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/**
 * Starts one cluster per region on 127.0.0.1, joined by gateways, and
 * resolves when every node links to every other region (and, with
 * JetStream, the supercluster-wide meta leader is agreed). Clients connect
 * with {@link NatsSupercluster.auth}.
 */
export function startSupercluster(options: SuperclusterOptions = {}): Promise<NatsSupercluster> {
  return retryOnPortClash(() => attempt(options));
}
