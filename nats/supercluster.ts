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
import type { UserPassword as UserPass, UserPass as ProbeAuth } from "./ready.js";
import { startServer, type NatsServer } from "./server.js";
import { startLink, type Link } from "./link.js";

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
  /**
   * Edge sites: one leaf node each, with its own JetStream domain (its
   * name), joined to the first region through a {@link Link} that can be
   * cut and restored. With edges, the supercluster's JetStream domain is
   * `hub`.
   */
  edges?: string[];
  /**
   * The accounts and authorization part of every node's config in place of
   * the default `SYS` and `APP` accounts (a secured supercluster: one
   * account per tenant and the auth callout, see `startSecureNats`), with
   * the credentials readiness probes use. It must name a system account.
   * Not with `edges` (their leaf links use the `APP` account).
   */
  accounts?: { config: Record<string, unknown>; auth: ProbeAuth };
}

/** An edge site of a supercluster: a leaf node with its own JetStream domain. */
export interface NatsEdge {
  readonly name: string;
  /** Its JetStream domain (its name). */
  readonly domain: string;
  readonly server: NatsServer;
  /** Its leaf node link to the hub region. */
  readonly link: Link;
  /** Resolves once its leaf connection to the hub is up. */
  linked(timeoutMs?: number): Promise<void>;
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
  /** Credentials clients must use: the APP account's (which does not exist when `accounts` replaced it). */
  readonly auth: UserPass;
  /** System account credentials. */
  readonly systemAuth: UserPass;
  /** Edge sites, by name. */
  readonly edges: Record<string, NatsEdge>;
  /** The supercluster's JetStream domain when it has edges (`hub`). */
  readonly domain?: string;
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
  inbound_gateways?: Record<string, unknown[]>;
}

/**
 * Waits until every node has its outbound gateway link to every other
 * region, and every region has taken the inbound links of every node of
 * each other region (each node dials one node of each other region, so a
 * node of a region of several may have none from a given region).
 */
async function waitForGateways(clusters: NatsCluster[], timeoutMs: number): Promise<void> {
  const servers = clusters.flatMap((c) => c.servers);
  await pollUntil(
    async () => {
      assertAllRunning(servers);
      for (const cluster of clusters) {
        const others = clusters.filter((c) => c !== cluster);
        const inbound = new Map<string, number>();
        for (const s of cluster.servers) {
          const gw = await monitorJson<Gatewayz>(s.monitorUrl, "/gatewayz");
          const missing = others.filter((r) => !gw.outbound_gateways?.[r.name]).map((r) => r.name);
          if (missing.length) throw new Error(`${s.name} lacks gateway links to ${missing.join(", ")}`);
          for (const r of others) inbound.set(r.name, (inbound.get(r.name) ?? 0) + (gw.inbound_gateways?.[r.name]?.length ?? 0));
        }
        for (const r of others) {
          if ((inbound.get(r.name) ?? 0) < r.servers.length) throw new Error(`${cluster.name} has ${inbound.get(r.name) ?? 0} of the ${r.servers.length} inbound gateway links from ${r.name}`);
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
  const edgeNames = options.edges ?? [];
  if (options.accounts && edgeNames.length > 0) throw new Error("startSupercluster: edges join the APP account; they cannot be combined with accounts");
  const ports = await freePorts(regions.length * perRegion + (edgeNames.length > 0 ? perRegion : 0));
  const gatewayPorts = Object.fromEntries(regions.map((r, i) => [r, ports.slice(i * perRegion, (i + 1) * perRegion)]));
  // Edges join the first region's nodes as leaf nodes; the supercluster is then JetStream domain `hub`.
  const leafPorts = edgeNames.length > 0 ? ports.slice(regions.length * perRegion) : [];
  const domain = edgeNames.length > 0 && jetstream ? HUB_DOMAIN : undefined;
  const config = mergeConfig(mergeConfig(options.accounts?.config ?? accountsBlock(jetstream), domain ? { jetstream: { domain } } : {}), options.config);
  const auth = options.accounts?.auth ?? APP_USER;
  // Regions start together: JetStream's meta group spans all of them.
  const results = await Promise.allSettled(
    regions.map((region) =>
      startCluster(perRegion, {
        name: region,
        jetstream,
        waitForJetStream: false,
        config,
        nodeConfig: (i) => ({
          ...gatewayBlock({ name: region, gatewayPort: gatewayPorts[region]![i]!, regions: gatewayPorts }),
          // Not advertised: an edge reaches the hub only through its link (else it learns the leaf port and goes around a cut link).
          ...(region === regions[0] && leafPorts.length > 0 && { leafnodes: { listen: `${HOST}:${leafPorts[i]}`, no_advertise: true } }),
        }),
        auth,
        readyTimeoutMs: timeoutMs,
        ...(options.debug !== undefined && { debug: options.debug }),
        ...(options.bin !== undefined && { bin: options.bin }),
      }),
    ),
  );
  const clusters = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const edges: NatsEdge[] = [];
  const cleanup = async () => {
    await Promise.all([...clusters.map((c) => c.cleanup()), ...edges.map(async (e) => (await e.server.cleanup(), await e.link.close()))]);
  };
  try {
    const errors = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    if (errors.length) throw errors.find((e) => e instanceof PortInUseError) ?? errors[0];
    const servers = clusters.flatMap((c) => c.servers);
    await waitForGateways(clusters, timeoutMs);
    if (jetstream) await waitForMetaLeader(servers, timeoutMs);
    for (const name of edgeNames) edges.push(await startEdge(name, leafPorts[0]!, jetstream, options, timeoutMs));
    return {
      regions,
      clusters: Object.fromEntries(clusters.map((c) => [c.name, c])),
      servers,
      urls: servers.map((s) => s.url),
      auth: APP_USER,
      systemAuth: SYS_USER,
      edges: Object.fromEntries(edges.map((e) => [e.name, e])),
      ...(domain && { domain }),
      stop: async () => {
        await Promise.all([...clusters.map((c) => c.stop()), ...edges.map((e) => e.server.stop())]);
      },
      cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** The supercluster's JetStream domain when it has edge sites. */
export const HUB_DOMAIN = "hub";

/** The `leafnodes` and `jetstream` blocks of an edge site's node: its own domain, and a leaf connection to the hub through `linkPort`. */
export function edgeBlock(name: string, linkPort: number, jetstream: boolean): Record<string, unknown> {
  return {
    ...(jetstream && { jetstream: { domain: name } }),
    leafnodes: { remotes: [{ urls: [`nats://${APP_USER.user}:${APP_USER.pass}@${HOST}:${linkPort}`], account: "APP" }] },
  };
}

interface Leafz {
  leafnodes?: number;
}

async function startEdge(name: string, hubLeafPort: number, jetstream: boolean, options: SuperclusterOptions, timeoutMs: number): Promise<NatsEdge> {
  const link = await startLink(hubLeafPort);
  try {
    const server = await startServer({
      name: `${name}-n1`,
      jetstream,
      config: mergeConfig(mergeConfig(accountsBlock(jetstream), edgeBlock(name, link.port, jetstream)), options.config),
      auth: APP_USER,
      readyTimeoutMs: timeoutMs,
      ...(options.debug !== undefined && { debug: options.debug }),
      ...(options.bin !== undefined && { bin: options.bin }),
    });
    const edge: NatsEdge = {
      name,
      domain: name,
      server,
      link,
      linked: (ms = timeoutMs) =>
        pollUntil(
          async () => {
            const l = await monitorJson<Leafz>(server.monitorUrl, "/leafz");
            if (!l.leafnodes) throw new Error(`edge ${name} has no leaf connection to the hub`);
            return true;
          },
          { timeoutMs: ms, intervalMs: 100, what: `edge ${name}'s leaf connection` },
        ).then(() => undefined),
    };
    await edge.linked();
    return edge;
  } catch (err) {
    await link.close();
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
