/**
 * Launching an N-node JetStream cluster on loopback: every node gets a
 * `server_name`, its own store dir, and routes to all the others.
 */
import { mergeConfig } from "./config.js";
import { assertAllRunning, waitForMetaLeader } from "./meta.js";
import { monitorJson } from "./monitor.js";
import { pollUntil } from "./poll.js";
import { HOST, PortInUseError, freePorts, retryOnPortClash } from "./ports.js";
import type { UserPass } from "./ready.js";
import { startServer, type NatsServer } from "./server.js";

/** Options for {@link startCluster}. */
export interface ClusterOptions {
  /** Cluster name (default `"agentbus"`); nodes are named `<name>-n1`, `<name>-n2`, ... */
  name?: string;
  /** Enable JetStream (default true). */
  jetstream?: boolean;
  /** Extra config deep-merged into every node's config. */
  config?: Record<string, unknown>;
  /** Extra config for node `index` (0-based), merged after `config`. */
  nodeConfig?: (index: number) => Record<string, unknown>;
  /** Credentials for readiness probes when the config requires them. */
  auth?: UserPass;
  /**
   * Wait for JetStream meta leader agreement before resolving (default: same
   * as `jetstream`). A supercluster turns it off per region and waits once
   * across all regions, since its meta group spans them.
   */
  waitForJetStream?: boolean;
  debug?: boolean;
  bin?: string;
  /** Timeout of each readiness phase: node start, route mesh, meta leader (default 60 s). */
  readyTimeoutMs?: number;
}

/** A running cluster started by {@link startCluster}. */
export interface NatsCluster {
  readonly name: string;
  readonly servers: NatsServer[];
  /** Client URLs of all nodes, in node order. */
  readonly urls: string[];
  /** Waits until all nodes agree on a JetStream meta leader; returns its name. */
  waitForMetaLeader(timeoutMs?: number): Promise<string>;
  /** Stops every node (SIGTERM), keeping store dirs. */
  stop(): Promise<void>;
  /** Stops every node and removes the dirs the launcher created. */
  cleanup(): Promise<void>;
}

/** Inputs of {@link clusterBlock}. */
export interface ClusterBlockInput {
  name: string;
  routePort: number;
  /** Route ports of the other nodes. */
  peerRoutePorts: number[];
}

/**
 * The `cluster { ... }` block for one node, as a pure function so the
 * example files come from the same code. Every node lists every other node:
 * with full-mesh explicit routes any node can restart and rejoin.
 *
 * A node without peers routes to itself: nats-server 2.9 refuses clustered
 * JetStream (a cluster or gateway block) with no configured routes ("JetStream
 * cluster requires configured routes"); a self-route satisfies that check
 * and is dropped at runtime as a duplicate.
 */
export function clusterBlock({ name, routePort, peerRoutePorts }: ClusterBlockInput): Record<string, unknown> {
  const targets = peerRoutePorts.length ? peerRoutePorts : [routePort];
  return {
    cluster: {
      name,
      listen: `${HOST}:${routePort}`,
      routes: targets.map((p) => `nats-route://${HOST}:${p}`),
    },
  };
}

/** Waits for every node's `/routez` to list all the others. */
async function waitForRoutes(servers: readonly NatsServer[], timeoutMs: number): Promise<void> {
  await pollUntil(
    async () => {
      assertAllRunning(servers);
      const counts = await Promise.all(
        servers.map(async (s) => (await monitorJson<{ num_routes: number }>(s.monitorUrl, "/routez")).num_routes),
      );
      return counts.every((n) => n >= servers.length - 1) ? true : undefined;
    },
    { timeoutMs, intervalMs: 100, what: `full route mesh among ${servers.length} servers` },
  );
}

async function attempt(size: number, options: ClusterOptions): Promise<NatsCluster> {
  const name = options.name ?? "agentbus";
  const jetstream = options.jetstream ?? true;
  const timeoutMs = options.readyTimeoutMs ?? 60_000;
  const ports = await freePorts(size * 3);
  const routePorts = ports.slice(2 * size);
  // Start all nodes at once: a JetStream node cannot become ready alone.
  const results = await Promise.allSettled(
    Array.from({ length: size }, (_, i) =>
      startServer({
        name: `${name}-n${i + 1}`,
        port: ports[i]!,
        httpPort: ports[size + i]!,
        jetstream,
        waitForJetStream: false,
        config: mergeConfig(
          mergeConfig(
            clusterBlock({ name, routePort: routePorts[i]!, peerRoutePorts: routePorts.filter((_, j) => j !== i) }),
            options.config,
          ),
          options.nodeConfig?.(i),
        ),
        ...(options.auth && { auth: options.auth }),
        ...(options.debug !== undefined && { debug: options.debug }),
        ...(options.bin !== undefined && { bin: options.bin }),
        readyTimeoutMs: timeoutMs,
      }),
    ),
  );
  const servers = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const cleanup = async () => {
    await Promise.all(servers.map((s) => s.cleanup()));
  };
  try {
    const errors = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    // A port clash wins so that startCluster retries with fresh ports.
    if (errors.length) throw errors.find((e) => e instanceof PortInUseError) ?? errors[0];
    if (size > 1) await waitForRoutes(servers, timeoutMs);
    const cluster: NatsCluster = {
      name,
      servers,
      urls: servers.map((s) => s.url),
      waitForMetaLeader: (t = timeoutMs) => waitForMetaLeader(servers, t),
      stop: async () => {
        await Promise.all(servers.map((s) => s.stop()));
      },
      cleanup,
    };
    if (options.waitForJetStream ?? jetstream) await cluster.waitForMetaLeader();
    return cluster;
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/**
 * Starts `size` JetStream nodes joined into one cluster on 127.0.0.1 and
 * resolves when routes form a full mesh and (with JetStream) all nodes agree
 * on a meta leader whose peers are current.
 */
export function startCluster(size = 3, options: ClusterOptions = {}): Promise<NatsCluster> {
  return retryOnPortClash(() => attempt(size, options));
}
