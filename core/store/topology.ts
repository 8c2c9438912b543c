/**
 * The topology as one connection sees it: the regions of its bus, how many
 * agents and instances run in each, and, on a federated bus, how its
 * region hears from each other one and from the edge sites that joined it
 * (the sources of its registry view).
 * For operators (`agentbus ls`, the monitor).
 */
import type { JetStreamManager, StreamSourceInfo } from "@nats-io/jetstream";
import type { Registry } from "./registry.js";

/**
 * How this region's registry view hears from another region or an edge
 * site (one of its sources): `up` while it heard within three heartbeat
 * periods; `lastHeardMs` since it last did (absent when it never did);
 * `lag` messages not sourced yet; `error` as the server reports it.
 */
export interface LinkState {
  up: boolean;
  lastHeardMs?: number;
  lag: number;
  error?: string;
}

/** One region as this connection sees it. */
export interface RegionView {
  name: string;
  /** This connection's own region. */
  local: boolean;
  /** Agents with a live instance there. */
  agents: number;
  /** Live instances there. */
  instances: number;
  /**
   * Federated, for another region: how this region's registry view hears
   * from it (its presence origin as a source of the view). When the view's
   * state cannot be read (JetStream without a meta leader, as when the
   * lost region held it), `up` while instances there heartbeat, and
   * `error` says so.
   */
  link?: LinkState;
}

/**
 * An edge site whose registry this region's view sources (it joined the
 * hub at its set-up): its agents and instances live here, named by their
 * region (the edge's domain), and its link as a region's.
 */
export interface EdgeView {
  /** The edge's JetStream domain. */
  name: string;
  agents: number;
  instances: number;
  link: LinkState;
}

/** What {@link readTopology} returns. */
export interface Topology {
  /** This connection's region, when it has one. */
  region?: string;
  /** Whether the bus is federated (`ConnectOptions.regions`). */
  federated: boolean;
  /** Every region: the federation's, else those the registry shows instances in (and this connection's). */
  regions: RegionView[];
  /**
   * At an edge site (`ConnectOptions.hub`): the hub, and whether its
   * JetStream answers through the leaf link now (`up`), with the entries
   * this identity has waiting in the edge's outbox.
   */
  hub?: { domain: string; region?: string; up: boolean; waiting: number };
  /** Federated: the edge sites this region hears from (empty when none joined). */
  edges?: EdgeView[];
}

/** A source's state as the server reports it, with the API prefix of a source in another JetStream domain (which the client's type leaves out). */
type SourceState = StreamSourceInfo & { external?: { api?: string } };

/** What {@link readTopology} reads. */
export interface TopologySource {
  registry: Registry;
  region?: string;
  regions?: readonly string[];
  /** Federated: the stream of this region's presence view, whose sources are the other regions' heartbeats. */
  presenceView?: string;
  /** The presence max age, ms: heartbeats come every third of it. */
  presenceMaxAgeMs: number;
  /** At an edge site: the hub, a probe of its JetStream through the leaf link, and this identity's outbox count. */
  hub?: { domain: string; region?: string; reachable: () => Promise<boolean>; waiting: () => Promise<number> };
}

/**
 * Reads the topology: live agents and instances per region from the
 * registry (local caches), and on a federated bus the state of each other
 * region's source in this region's presence view (one stream info).
 */
export async function readTopology(jsm: JetStreamManager, t: TopologySource): Promise<Topology> {
  const count = new Map<string, { agents: number; instances: number }>();
  for (const agent of t.registry.discover({ online: true })) {
    for (const region of agent.regions) {
      const c = count.get(region) ?? { agents: 0, instances: 0 };
      c.agents++;
      c.instances += t.registry.instances(agent.id, region).length;
      count.set(region, c);
    }
  }
  const names = t.regions ? [...t.regions] : [...new Set([...(t.region === undefined ? [] : [t.region]), ...[...count.keys()].sort()])];
  let sources: SourceState[] = [];
  // Without the view's info (JetStream without a meta leader, as when the other region held it), the links are judged by heartbeats.
  let unread: string | undefined;
  if (t.regions && t.presenceView) sources = await jsm.streams.info(t.presenceView).then((i) => i.sources ?? [], (err: unknown) => ((unread = (err as Error).message), []));
  const heartbeatMs = t.presenceMaxAgeMs / 3;
  const hub = t.hub && { domain: t.hub.domain, ...(t.hub.region !== undefined && { region: t.hub.region }), up: await t.hub.reachable(), waiting: await t.hub.waiting().catch(() => 0) };
  // `active` is nanoseconds since the source was last heard from (-1: never).
  const linkOf = (source: SourceState): LinkState => {
    const lastHeardMs = source.active >= 0 ? Math.round(source.active / 1_000_000) : undefined;
    const error = source.error?.description;
    return { up: lastHeardMs !== undefined && lastHeardMs <= 3 * heartbeatMs && !error, ...(lastHeardMs !== undefined && { lastHeardMs }), lag: source.lag, ...(error && { error }) };
  };
  // Edge sites: sources in another JetStream domain (`$JS.<edge>.API`).
  const edges = sources.flatMap((source) => {
    const name = /^\$JS\.(.+)\.API$/.exec(source.external?.api ?? "")?.[1];
    return name === undefined ? [] : [{ name, agents: count.get(name)?.agents ?? 0, instances: count.get(name)?.instances ?? 0, link: linkOf(source) }];
  });
  return {
    ...(t.region !== undefined && { region: t.region }),
    ...(hub && { hub }),
    ...(t.regions && { edges }),
    federated: t.regions !== undefined,
    regions: names.map((name) => {
      const local = name === t.region;
      const view: RegionView = { name, local, agents: count.get(name)?.agents ?? 0, instances: count.get(name)?.instances ?? 0 };
      if (!t.regions || local) return view;
      if (unread !== undefined) return { ...view, link: { up: view.instances > 0, lag: 0, error: `link not read (${unread}): judged by the region's heartbeats` } };
      const source = sources.find((s) => !s.external && s.name.endsWith(`_presence_${name}`));
      if (!source) return { ...view, link: { up: false, lag: 0, error: "not sourced" } };
      return { ...view, link: linkOf(source) };
    }),
  };
}
