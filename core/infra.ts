import type { JetStreamManager, StreamConfig } from "@nats-io/jetstream";
import { Kvm, type KV, type KvOptions } from "@nats-io/kv";
import { AgentBusError } from "./errors.js";
import type { Subjects } from "./subjects.js";

/**
 * Retries a JetStream API call that may time out while a cluster elects a
 * meta leader or a stream leader (a few seconds after start or a node loss).
 */
export async function retryJs<T>(fn: () => Promise<T>, attempts = 8): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      const msg = String((err as Error)?.message ?? err);
      const transient = /timeout|TIMEOUT|no responders|leader|temporarily unavailable|insufficient resources/i.test(msg);
      if (!transient || i >= attempts) throw err;
      await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** i)));
    }
  }
}

function mismatch(what: string, err: unknown): AgentBusError {
  return new AgentBusError(
    "CONFIG_MISMATCH",
    `${what} exists with a different configuration; it was left as it is. Fix or remove it (nats stream info / nats kv info): ${(err as Error).message}`,
    { cause: err },
  );
}

/** Opens a KV bucket, creating it with `options` when missing. */
export async function ensureBucket(kvm: Kvm, name: string, options: Partial<KvOptions>): Promise<KV> {
  try {
    return await retryJs(() => kvm.create(name, options));
  } catch (err) {
    if (/already in use|different configuration/i.test(String(err))) throw mismatch(`KV bucket ${name}`, err);
    throw err;
  }
}

/** Creates a stream when missing; an existing one with other settings is reported, not changed. */
export async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await retryJs(() => jsm.streams.add(config));
  } catch (err) {
    if (/already in use|different configuration/i.test(String(err))) throw mismatch(`stream ${config.name}`, err);
    throw err;
  }
}

/** Settings for the tenant's buckets and streams. */
export interface InfraOptions {
  /** Replicas of every stream and bucket (1 single server, 3 in a 3-node cluster). */
  replicas: number;
  /** Max age of a presence entry in ms: an agent not heard from for this long is offline. */
  presenceMaxAgeMs: number;
  /** How long audit records are kept, ms. */
  auditMaxAgeMs: number;
}

/** The buckets the core library reads and writes. */
export interface CoreBuckets {
  agents: KV;
  presence: KV;
  acl: KV;
  revoked: KV;
}

/** Creates (idempotently) the buckets and the audit stream of one tenant. */
export async function ensureCoreInfra(jsm: JetStreamManager, kvm: Kvm, s: Subjects, o: InfraOptions): Promise<CoreBuckets> {
  const base = { replicas: o.replicas, history: 1 };
  const [agents, presence, acl, revoked] = await Promise.all([
    ensureBucket(kvm, s.bucket("agents"), base),
    ensureBucket(kvm, s.bucket("presence"), { ...base, ttl: o.presenceMaxAgeMs }),
    ensureBucket(kvm, s.bucket("acl"), base),
    ensureBucket(kvm, s.bucket("revoked"), base),
  ]);
  await ensureStream(jsm, {
    name: s.stream("AUDIT"),
    subjects: [`${s.prefix}.audit.>`],
    num_replicas: o.replicas,
    max_age: o.auditMaxAgeMs * 1_000_000,
  });
  return { agents, presence, acl, revoked };
}
