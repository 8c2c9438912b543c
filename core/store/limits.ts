/**
 * Concurrency and rate limits of a capability, held across every replica
 * of its agents: one record per capability in `mesh_<t>_limits`, changed by
 * compare-and-set. A run takes a lease before its handler starts and gives
 * it back when it ends; a lease of a process that died expires (it is
 * renewed while the run goes on). Starts are logged (the last `max` of
 * them), so that no window of `perMs` holds more than `max` starts.
 *
 * No rate-limiting library keeps its state in JetStream; the record's rules
 * are these few lines, and the server's compare-and-set makes them hold
 * across processes.
 */
import type { KV } from "@nats-io/kv";
import { AgentBusError } from "../wire/errors.js";
import { isRevisionConflict } from "../infra/jetstream.js";

/** Limits of one capability, across all replicas of its agents. */
export interface CapabilityLimits {
  /** At most this many runs at once (durable tasks and fast calls). */
  maxInFlight?: number;
  /** At most `max` runs start in any window of `perMs` ms. */
  rate?: { max: number; perMs: number };
}

/** The record of a capability in `mesh_<t>_limits`. */
export interface LimitState {
  /** The limits the last writer runs with. */
  limits: CapabilityLimits;
  /** Runs holding a lease: lease id → when it expires (ms since the epoch). */
  leases: Record<string, number>;
  /** Start times of the last runs (at most `rate.max`), oldest first. */
  starts: number[];
}

/** Checks limits as given by an agent; `INVALID_INPUT` for nonsense. */
export function checkLimits(cap: string, l: CapabilityLimits): CapabilityLimits {
  const whole = (n: unknown) => Number.isSafeInteger(n) && (n as number) > 0;
  if (l.maxInFlight !== undefined && !whole(l.maxInFlight)) throw new AgentBusError("INVALID_INPUT", `limits of ${cap}: maxInFlight must be a whole number > 0`);
  if (l.rate !== undefined && (!whole(l.rate.max) || !whole(l.rate.perMs) || l.rate.max > 10_000)) {
    throw new AgentBusError("INVALID_INPUT", `limits of ${cap}: rate is {max, perMs}, whole numbers > 0, max at most 10 000`);
  }
  return l;
}

/** Longest wait between two looks at a full record (a lease given back is seen within this). */
const POLL_MS = 100;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
    };
    const abort = () => {
      done();
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      done();
      resolve();
    }, ms);
    signal.addEventListener("abort", abort, { once: true });
  });

/** One capability's limits as one process applies them. */
export class CapabilityLimiter {
  constructor(
    readonly kv: KV,
    readonly capability: string,
    readonly limits: CapabilityLimits,
    /** How long a lease lasts without renewal, ms. */
    readonly leaseMs: number,
  ) {}

  /** The record as stored now (empty when none), leases expired and starts out of the window dropped. */
  async state(now = Date.now()): Promise<{ state: LimitState; revision: number }> {
    const e = await this.kv.get(this.capability);
    const raw = e && e.operation === "PUT" && e.length > 0 ? (e.json() as Partial<LimitState>) : {};
    const leases = Object.fromEntries(Object.entries(raw.leases ?? {}).filter(([, exp]) => typeof exp === "number" && exp > now));
    const perMs = this.limits.rate?.perMs;
    const starts = (raw.starts ?? []).filter((t) => typeof t === "number" && (perMs === undefined || t > now - perMs));
    return { state: { limits: this.limits, leases, starts }, revision: e?.revision ?? 0 };
  }

  /**
   * Waits until a run may start under the limits, then records it under
   * `lease`. Rejects with `signal`'s reason when it aborts first.
   */
  async acquire(lease: string, signal: AbortSignal): Promise<void> {
    for (;;) {
      signal.throwIfAborted();
      const now = Date.now();
      const { state, revision } = await this.state(now);
      const wait = this.#waitMs(state, now);
      if (wait > 0) {
        await sleep(Math.min(wait, POLL_MS * (0.5 + Math.random())), signal);
        continue;
      }
      state.leases[lease] = now + this.leaseMs;
      if (this.limits.rate) state.starts = [...state.starts, now].slice(-this.limits.rate.max);
      if (await this.#write(state, revision)) return;
    }
  }

  /**
   * Runs `fn` under the limits: waits for a turn ({@link acquire}), renews
   * the lease while `fn` runs, gives it back when `fn` settles.
   */
  async run<T>(lease: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    await this.acquire(lease, signal);
    return this.holding(lease, fn);
  }

  /** Runs `fn` holding `lease` (already acquired): renewed meanwhile, given back after. */
  async holding<T>(lease: string, fn: () => Promise<T>): Promise<T> {
    const renew = setInterval(() => void this.renew(lease).catch(() => {}), Math.max(100, Math.floor(this.leaseMs / 3)));
    try {
      return await fn();
    } finally {
      clearInterval(renew);
      await this.release(lease).catch(() => {});
    }
  }

  /** Extends `lease` (a run still going on); false when it had expired and was dropped. */
  async renew(lease: string): Promise<boolean> {
    return this.#change((s) => (lease in s.leases ? ((s.leases[lease] = Date.now() + this.leaseMs), true) : false));
  }

  /** Gives `lease` back. */
  async release(lease: string): Promise<void> {
    await this.#change((s) => (lease in s.leases ? (delete s.leases[lease], true) : false));
  }

  /** How long to wait before a start would keep within the limits (0: now). */
  #waitMs(s: LimitState, now: number): number {
    const { maxInFlight, rate } = this.limits;
    if (maxInFlight !== undefined && Object.keys(s.leases).length >= maxInFlight) return Math.max(1, Math.min(...Object.values(s.leases)) - now);
    if (rate && s.starts.length >= rate.max) return Math.max(1, s.starts[s.starts.length - rate.max]! + rate.perMs - now);
    return 0;
  }

  /** Applies `change` by compare-and-set until it holds (`change` false: nothing to write). */
  async #change(change: (s: LimitState) => boolean): Promise<boolean> {
    for (let i = 0; ; i++) {
      const { state, revision } = await this.state();
      if (!change(state)) return false;
      if (await this.#write(state, revision)) return true;
      if (i > 50) throw new AgentBusError("UNAVAILABLE", `the limits of ${this.capability}: the write lost the race 50 times in a row`);
    }
  }

  /** Writes `s` expecting `revision` (0: a new record); false when another writer got there first. */
  async #write(s: LimitState, revision: number): Promise<boolean> {
    const value = JSON.stringify(s);
    try {
      if (revision === 0) await this.kv.create(this.capability, value);
      else await this.kv.update(this.capability, value, revision);
      return true;
    } catch (err) {
      if (isRevisionConflict(err) || /wrong last sequence|key exists/i.test(String(err))) return false;
      throw err;
    }
  }
}
