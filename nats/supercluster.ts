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
import { NatsServerStartError, startServer, type NatsServer } from "./server.js";
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
   * With `edges`, `links` says how each edge links to the hub; an edge
   * runs the same `config`, so it authenticates its own clients while its
   * link is down.
   */
  accounts?: { config: Record<string, unknown>; auth: ProbeAuth; links?: LeafLinks };
  /**
   * Resolve once the edges' nodes run, without waiting for their links
   * (default false): when what authorizes the links (an auth callout)
   * starts after the servers. {@link NatsEdge.linked} waits for them.
   */
  edgesUnlinked?: boolean;
}

/**
 * The leaf links of a secured supercluster: the accounts an edge links to
 * the hub (one leaf connection each: the tenants', and the one holding
 * what an edge mirrors), each signing in as the account's leaf user
 * ({@link leafUser}) with `password`, which the hub's auth callout checks.
 */
export interface LeafLinks {
  accounts: readonly string[];
  password: string;
}

/** An edge site of a supercluster: a leaf node with its own JetStream domain. */
export interface NatsEdge {
  readonly name: string;
  /** Its JetStream domain (its name). */
  readonly domain: string;
  readonly server: NatsServer;
  /** Its leaf node link to the hub region. */
  readonly link: Link;
  /** Resolves once its leaf connections to the hub are up (one per linked account). */
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
  /** A secured supercluster with edges: its leaf links (see {@link edgeBlock} to change them on a reload). */
  readonly links?: LeafLinks;
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
  if (options.accounts && edgeNames.length > 0 && !options.accounts.links?.accounts.length) throw new Error("startSupercluster: edges of a secured supercluster need accounts.links, how they link to the hub");
  const links = edgeNames.length > 0 ? options.accounts?.links : undefined;
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
          ...(region === regions[0] && leafPorts.length > 0 && hubLeafBlock(leafPorts[i]!)),
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
    for (const name of edgeNames) edges.push(await startEdge(name, leafPorts[0]!, jetstream, options, timeoutMs, links));
    return {
      regions,
      clusters: Object.fromEntries(clusters.map((c) => [c.name, c])),
      servers,
      urls: servers.map((s) => s.url),
      auth: APP_USER,
      systemAuth: SYS_USER,
      edges: Object.fromEntries(edges.map((e) => [e.name, e])),
      ...(domain && { domain }),
      ...(links && { links }),
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

/**
 * Subjects that stay on their side of an edge's leaf link, both ways: what
 * the bus stores (KV and object store writes, and the tenant's work,
 * events, dead letters, inbox, audit, schedules and outbox subjects of
 * its single plane), so that a stream of the edge's domain and one of the
 * hub's, made with the same subjects, never both store one message. What
 * an edge writes into the hub goes through the hub's API prefix
 * (`$JS.<domain>.API.$KV.…`) or to the subjects of a region's plane
 * (`<root>.<t>.region.<region>.…`), which cross.
 */
export const EDGE_LOCAL_SUBJECTS: readonly string[] = ["$KV.>", "$O.>", ...["work", "delayed", "events", "dlq", "inbox", "audit", "schedule", "tick", "outbox"].map((k) => `*.*.${k}.>`)];

/** The user an edge's leaf connection of `account` signs in as at the hub (see {@link LeafLinks}). */
export const leafUser = (account: string): string => `leaf-${account}`;

/**
 * The `leafnodes` block of a hub node that edges link to: its leaf port,
 * not advertised (an edge reaches the hub only through its link, else it
 * learns the port and goes around a cut link). On a secured supercluster
 * its leaf connections are authorized as clients are, by the auth callout
 * (see {@link LeafLinks}).
 */
export function hubLeafBlock(port: number): Record<string, unknown> {
  return { leafnodes: { listen: `${HOST}:${port}`, no_advertise: true } };
}

/**
 * The `leafnodes` and `jetstream` blocks of an edge site's node: its own
 * domain, and leaf connections to the hub through `linkPort`: the `APP`
 * account's, or with `links` one per linked account. Stored subjects stay
 * on their side ({@link EDGE_LOCAL_SUBJECTS}), and so do authorization
 * requests (an edge's own authority answers its clients).
 */
export function edgeBlock(name: string, linkPort: number, jetstream: boolean, links?: LeafLinks): Record<string, unknown> {
  const local = [...EDGE_LOCAL_SUBJECTS, "$SYS.REQ.USER.AUTH"];
  const remote = (account: string, credentials: string) => ({ urls: [`nats://${credentials}@${HOST}:${linkPort}`], account, deny_imports: local, deny_exports: local });
  return {
    ...(jetstream && { jetstream: { domain: name } }),
    leafnodes: {
      remotes: links
        ? links.accounts.map((a) => remote(a, `${encodeURIComponent(leafUser(a))}:${encodeURIComponent(links.password)}`))
        : [remote("APP", `${APP_USER.user}:${APP_USER.pass}`)],
    },
  };
}

interface Leafz {
  leafnodes?: number;
}

async function startEdge(name: string, hubLeafPort: number, jetstream: boolean, options: SuperclusterOptions, timeoutMs: number, links?: LeafLinks): Promise<NatsEdge> {
  const link = await startLink(hubLeafPort);
  try {
    const server = await startServer({
      name: `${name}-n1`,
      jetstream,
      config: mergeConfig(mergeConfig(options.accounts?.config ?? accountsBlock(jetstream), edgeBlock(name, link.port, jetstream, links)), options.config),
      auth: options.accounts?.auth ?? APP_USER,
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
            // As many as the config in force has remotes (a reload may have added some).
            const want = ((server.config.leafnodes as { remotes?: unknown[] } | undefined)?.remotes?.length) ?? 1;
            if ((l.leafnodes ?? 0) < want) throw new Error(`edge ${name} has ${l.leafnodes ?? 0} of its ${want} leaf connections to the hub`);
            return true;
          },
          { timeoutMs: ms, intervalMs: 100, what: `edge ${name}'s leaf connection` },
        ).then(() => undefined, (err: unknown) => {
          // The edge's log says why the hub refused it.
          throw new NatsServerStartError(err instanceof Error ? err.message : String(err), server.logTail());
        }),
    };
    if (!options.edgesUnlinked) await edge.linked();
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
