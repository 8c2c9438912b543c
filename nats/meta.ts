/**
 * JetStream meta-group agreement: in a clustered (or super-clustered)
 * JetStream, API calls time out until the nodes have elected a meta leader
 * and the leader sees its peers, so "all processes are up" is not "ready".
 */
import type { NatsServer } from "./server.js";
import { monitorJson } from "./monitor.js";
import { fatal, pollUntil } from "./poll.js";
import { PortInUseError } from "./ports.js";
import { probe } from "./ready.js";

interface Jsz {
  meta_cluster?: {
    leader?: string;
    cluster_size?: number;
    replicas?: { name: string; current: boolean }[];
  };
}

/**
 * Fails fast (via `fatal`) when a node has died, e.g. because its route
 * port was taken after its client port opened.
 */
export function assertAllRunning(servers: readonly NatsServer[]): void {
  for (const s of servers) {
    if (s.running) continue;
    const msg = `nats-server ${s.name ?? s.url} exited; config ${s.configFile}\n${s.logTail()}`;
    throw fatal(/address already in use/.test(s.logTail()) ? new PortInUseError(msg) : new Error(msg));
  }
}

/**
 * Waits until every server reports the same JetStream meta leader (from
 * `/jsz`), the leader (when it is one of `servers`) sees the others as
 * current peers, and `$JS.API.INFO` answers on every server. Returns the
 * leader's `server_name`.
 */
export async function waitForMetaLeader(servers: readonly NatsServer[], timeoutMs = 60_000): Promise<string> {
  return pollUntil(
    async () => {
      assertAllRunning(servers);
      const views = await Promise.all(servers.map((s) => monitorJson<Jsz>(s.monitorUrl, "/jsz")));
      const leaders = new Set(views.map((v) => v.meta_cluster?.leader ?? ""));
      const [leader] = leaders;
      if (leaders.size !== 1 || !leader) throw new Error(`meta leaders seen: ${[...leaders].map((l) => l || "(none)").join(", ")}`);
      // Only the leader's /jsz lists the peers and whether they are current.
      const leaderView = views[servers.findIndex((s) => s.name === leader)];
      const current = leaderView?.meta_cluster?.replicas?.filter((r) => r.current).length ?? 0;
      if (leaderView && current < servers.length - 1) {
        throw new Error(`leader ${leader} sees ${current}/${servers.length - 1} current peers`);
      }
      await Promise.all(servers.map((s) => probe({ url: s.url, auth: s.auth, jetstream: true })));
      return leader;
    },
    { timeoutMs, intervalMs: 250, what: `JetStream meta leader agreement among ${servers.length} servers` },
  );
}
