/**
 * Vitest helpers that run a real nats-server (or cluster) for the tests of
 * one file: started in `beforeAll`, stopped and deleted in `afterAll`.
 *
 * @example
 * const nats = useNatsServer();
 * it("connects", async () => {
 *   const nc = await connect({ servers: nats.server.url });
 * });
 */
import { afterAll, beforeAll } from "vitest";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect as natsConnect, nkeyAuthenticator } from "@nats-io/transport-node";
import {
  startCluster,
  startServer,
  startSupercluster,
  type ClusterOptions,
  type NatsCluster,
  type NatsServer,
  type NatsSupercluster,
  type ServerOptions,
  type SuperclusterOptions,
} from "../../nats/index.js";

// Generous: a JetStream cluster on a busy 2-core machine can take 10 s or
// more to elect a meta leader, and a supercluster longer.
const SERVER_TIMEOUT_MS = 30_000;
const CLUSTER_TIMEOUT_MS = 90_000;

function useResource<T extends { cleanup(): Promise<void> }>(
  what: string,
  start: () => Promise<T>,
  timeoutMs: number,
): () => T {
  let resource: T | undefined;
  beforeAll(async () => {
    resource = await start();
  }, timeoutMs);
  afterAll(async () => {
    await resource?.cleanup();
  }, timeoutMs);
  return () => {
    // Reading it at module level (outside hooks/tests) is a mistake we explain.
    if (!resource) throw new Error(`${what} is not running: use it inside a test or hook`);
    return resource;
  };
}

/** Holder for {@link useNatsServer}'s server. */
export interface NatsServerHolder {
  readonly server: NatsServer;
}

/** Runs one nats-server (JetStream on by default) for this test file. */
export function useNatsServer(options?: ServerOptions): NatsServerHolder {
  const get = useResource("useNatsServer's server", () => startServer(options), SERVER_TIMEOUT_MS);
  return {
    get server() {
      return get();
    },
  };
}

/** Holder for {@link useNatsCluster}'s cluster. */
export interface NatsClusterHolder {
  readonly cluster: NatsCluster;
}

/** Runs a `size`-node JetStream cluster for this test file. */
export function useNatsCluster(size = 3, options?: ClusterOptions): NatsClusterHolder {
  const get = useResource("useNatsCluster's cluster", () => startCluster(size, options), CLUSTER_TIMEOUT_MS);
  return {
    get cluster() {
      return get();
    },
  };
}

/** Holder for {@link useNatsSupercluster}'s supercluster. */
export interface NatsSuperclusterHolder {
  readonly supercluster: NatsSupercluster;
}

/** Runs a gateway-joined supercluster for this test file. */
export function useNatsSupercluster(options?: SuperclusterOptions): NatsSuperclusterHolder {
  const get = useResource("useNatsSupercluster's supercluster", () => startSupercluster(options), CLUSTER_TIMEOUT_MS);
  return {
    get supercluster() {
      return get();
    },
  };
}

/**
 * Publishes `data` on `subject` from a raw client and reports whether the
 * server refused it (a permissions violation arrives asynchronously, as a
 * status error naming the subject).
 */
export async function publishRefused(nc: NatsConnection, subject: string, data = "x"): Promise<boolean> {
  const errors: string[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === "error") errors.push(String(s.error));
  })();
  nc.publish(subject, new TextEncoder().encode(data));
  await nc.flush();
  await new Promise((r) => setTimeout(r, 150));
  return errors.some((e) => /permission/i.test(e) && e.includes(subject));
}

/**
 * A raw NATS client signed in with an identity's key (the nkey challenge
 * the authority checks), no library in between: what an attacker holding
 * the key would have. Replies under `_INBOX.<id>` unless told otherwise.
 */
export function connectRaw(servers: string | string[], identity: { id: string; exportSeed(): string }, inboxPrefix = `_INBOX.${identity.id}`): Promise<NatsConnection> {
  return natsConnect({ servers, authenticator: nkeyAuthenticator(new TextEncoder().encode(identity.exportSeed())), inboxPrefix, reconnect: false });
}
