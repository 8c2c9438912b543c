/**
 * The console's charts over time: per tenant and capability, tasks ended
 * and their latency, queued and running work, and dead letters, in 10 s
 * buckets kept for 24 h. Fed live from the tenant's task events (and, at
 * start, the events stored in the last hour), and sampled from the work
 * and dead-letter streams once per bucket. Counts and latencies only: no
 * task content is kept.
 */
import { jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import { isAgentBusError, isTerminal, type Bus, type TaskEvent, type TaskState } from "../../core/internal.js";
import { readStream } from "../events/index.js";

/** Width of a bucket, ms. */
export const BUCKET_MS = 10_000;
/** How long buckets are kept, ms (the longest window `/v1/stats` shows). */
export const RETENTION_MS = 24 * 60 * 60 * 1000;
/** How far back the events stored before the collector started are read, ms. */
export const BACKFILL_MS = 60 * 60 * 1000;
/** Capabilities tracked per tenant; the tasks and samples of further ones are not kept. */
export const MAX_CAPABILITIES = 256;
/** Tasks remembered (their capability, creation time, whether they ended), least recently used forgotten first. */
const MAX_TASKS = 20_000;
/** Latencies kept per capability for the bucket being filled; past it, a uniform sample of them (reservoir). */
const MAX_SAMPLES = 2048;

const SLOTS = RETENTION_MS / BUCKET_MS;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms).unref());

/** One bucket of one capability, as `/v1/stats` answers it. */
export interface StatsPoint {
  /** Start of the bucket (ISO 8601). */
  t: string;
  /** Tasks that ended COMPLETED in the bucket (by the time the events stream stored their final event). */
  completed: number;
  /** Tasks that ended FAILED or REJECTED in the bucket. */
  failed: number;
  /** Tasks that ended CANCELED in the bucket. */
  canceled: number;
  /**
   * Percentiles (nearest rank) of the ms from each task's creation
   * (`metadata.createdAt`) to its final status, over the tasks that ended
   * in the bucket; null when none did (or none had a known creation time).
   */
  p50: number | null;
  p95: number | null;
  p99: number | null;
  /** Work items waiting for a worker, all priorities (sampled once per bucket; 0 when not sampled). */
  queued: number;
  /** Work items a worker holds, not acknowledged yet (sampled with `queued`). */
  running: number;
  /** Dead letters stored for the capability (sampled with `queued`). */
  deadLetters: number;
}

/** What `/v1/stats` answers. */
export interface Stats {
  bucketMs: number;
  /** When the answer was made (ISO 8601); the last point is the bucket holding it. */
  now: string;
  /** Each capability with anything recorded in the window, by name; its points oldest first, one per bucket. */
  capabilities: Array<{ capability: string; points: StatsPoint[] }>;
}

const ENDED = { completed: 0, failed: 1, canceled: 2 } as const;
const GAUGES = { queued: 0, running: 1, deadLetters: 2 } as const;
const PERCENTILES = [50, 95, 99] as const;

/**
 * One capability's buckets: a ring of {@link SLOTS} slots, each holding
 * the bucket number it was last written for. About 350 KB per capability,
 * whatever the traffic.
 */
class Series {
  readonly #bucket = new Int32Array(SLOTS).fill(-1);
  readonly #ended = new Uint32Array(SLOTS * 3);
  readonly #percentiles = new Float32Array(SLOTS * 3).fill(Number.NaN);
  readonly #gauges = new Uint32Array(SLOTS * 3);

  /** The slot of bucket `b`, cleared first when it held an older bucket. */
  #slot(b: number): number {
    const i = b % SLOTS;
    if (this.#bucket[i] !== b) {
      this.#bucket[i] = b;
      this.#ended.fill(0, i * 3, i * 3 + 3);
      this.#percentiles.fill(Number.NaN, i * 3, i * 3 + 3);
      this.#gauges.fill(0, i * 3, i * 3 + 3);
    }
    return i;
  }

  ended(b: number, kind: keyof typeof ENDED): void {
    this.#ended[this.#slot(b) * 3 + ENDED[kind]]!++;
  }

  gauge(b: number, kind: keyof typeof GAUGES, value: number): void {
    this.#gauges[this.#slot(b) * 3 + GAUGES[kind]] = value;
  }

  percentiles(b: number, values: readonly number[]): void {
    const i = this.#slot(b);
    values.forEach((v, k) => (this.#percentiles[i * 3 + k] = v));
  }

  /** Whether anything was recorded for bucket `b`. */
  has(b: number): boolean {
    return this.#bucket[b % SLOTS] === b;
  }

  point(b: number, open?: readonly number[]): StatsPoint {
    const i = b % SLOTS;
    const held = this.#bucket[i] === b;
    const ended = (k: keyof typeof ENDED) => (held ? this.#ended[i * 3 + ENDED[k]]! : 0);
    const gauge = (k: keyof typeof GAUGES) => (held ? this.#gauges[i * 3 + GAUGES[k]]! : 0);
    const percentile = (k: number): number | null => {
      const v = open ? open[k] : held ? this.#percentiles[i * 3 + k]! : Number.NaN;
      return v === undefined || Number.isNaN(v) ? null : Math.round(v);
    };
    return {
      t: new Date(b * BUCKET_MS).toISOString(),
      completed: ended("completed"),
      failed: ended("failed"),
      canceled: ended("canceled"),
      p50: percentile(0),
      p95: percentile(1),
      p99: percentile(2),
      queued: gauge("queued"),
      running: gauge("running"),
      deadLetters: gauge("deadLetters"),
    };
  }
}

/** Nearest-rank percentiles of `samples` (sorted here), in {@link PERCENTILES} order. */
function percentilesOf(samples: number[]): number[] {
  samples.sort((a, b) => a - b);
  return PERCENTILES.map((p) => samples[Math.max(0, Math.ceil((p / 100) * samples.length) - 1)]!);
}

/** The latencies of the bucket being filled, per capability: every one up to {@link MAX_SAMPLES}, then a uniform sample. */
class OpenBucket {
  readonly samples = new Map<string, { kept: number[]; seen: number }>();
  constructor(readonly bucket: number) {}

  add(capability: string, ms: number): void {
    let s = this.samples.get(capability);
    if (!s) this.samples.set(capability, (s = { kept: [], seen: 0 }));
    s.seen++;
    if (s.kept.length < MAX_SAMPLES) s.kept.push(ms);
    else {
      const j = Math.floor(Math.random() * s.seen);
      if (j < MAX_SAMPLES) s.kept[j] = ms;
    }
  }

  percentiles(capability: string): number[] | undefined {
    const s = this.samples.get(capability);
    return s && s.kept.length > 0 ? percentilesOf([...s.kept]) : undefined;
  }
}

/** What is remembered of a task. */
interface TaskEntry {
  /** Its final event was counted. */
  ended?: boolean;
}

/** What a task's snapshot says for the charts. */
interface TaskFacts {
  capability: string;
  /** ms since the epoch, when known. */
  createdAt?: number;
}

/** Least recently used first out, bounded. */
class Lru<K, V> {
  readonly #map = new Map<K, V>();
  constructor(readonly max: number) {}
  get(key: K): V | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }
  set(key: K, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    if (this.#map.size > this.max) this.#map.delete(this.#map.keys().next().value!);
  }
}

/** How one task event counts. */
const endedAs = (state: TaskState): keyof typeof ENDED => (state === "TASK_STATE_COMPLETED" ? "completed" : state === "TASK_STATE_CANCELED" ? "canceled" : "failed");

/**
 * The charts of one tenant (one task plane: a federated bus's region), on
 * the monitor's connections to it. Its task events are read by one ordered
 * consumer from {@link BACKFILL_MS} before the start, then live; a task is
 * counted at its first final event (COMPLETED; FAILED or REJECTED as
 * failed; CANCELED), under the capability its snapshot names, read once
 * through the first of the connections that may see it (a task none may
 * see is not counted: an operator grants the monitor's identity `task.>`
 * for every task of the tenant). Its latency runs from the snapshot's
 * `metadata.createdAt` (for a task created before that was recorded, its
 * first stored event) to the final status's timestamp.
 *
 * Once per bucket, the work stream's queues (`bus.workload()`) and the
 * dead-letter stream's count per capability are sampled.
 *
 * Memory is bounded: at most {@link MAX_CAPABILITIES} capabilities of
 * about 350 KB each, 20 000 remembered tasks, and up to 2 048 latencies
 * per capability for the bucket being filled.
 */
export class TenantStats {
  readonly #buses: readonly Bus[];
  readonly #bus: Bus;
  readonly #series = new Map<string, Series>();
  readonly #tasks = new Lru<string, TaskEntry>(MAX_TASKS);
  #open?: OpenBucket;
  #stopped = false;
  #stopReading?: () => void;
  #loop?: Promise<void>;
  #sampler?: NodeJS.Timeout;
  #warnedFull = false;

  /** `buses`: the monitor's connections to one tenant; the first reads the streams. */
  private constructor(buses: readonly Bus[]) {
    this.#buses = buses;
    this.#bus = buses[0]!;
  }

  /**
   * Starts collecting. Resolves once the first attempt to open the events
   * consumer is done (a failure is logged and retried in the background).
   */
  static async start(buses: readonly Bus[]): Promise<TenantStats> {
    const s = new TenantStats(buses);
    let opened!: () => void;
    const first = new Promise<void>((r) => (opened = r));
    s.#loop = s.#read(opened);
    s.#sample();
    await first;
    return s;
  }

  /** Stops reading and sampling; resolves when the reader has ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#sampler);
    this.#stopReading?.();
    await this.#loop;
  }

  /** The last `minutes` of every capability with anything recorded in them. */
  read(minutes: number): Stats {
    const now = Date.now();
    const last = Math.floor(now / BUCKET_MS);
    const first = last - Math.ceil((minutes * 60_000) / BUCKET_MS) + 1;
    const capabilities: Stats["capabilities"] = [];
    for (const [capability, series] of [...this.#series].sort(([a], [b]) => a.localeCompare(b))) {
      let any = false;
      for (let b = first; b <= last && !any; b++) any = series.has(b);
      if (!any) continue;
      const points: StatsPoint[] = [];
      for (let b = first; b <= last; b++) points.push(series.point(b, this.#open?.bucket === b ? (this.#open.percentiles(capability) ?? []) : undefined));
      capabilities.push({ capability, points });
    }
    return { bucketMs: BUCKET_MS, now: new Date(now).toISOString(), capabilities };
  }

  /** The series of `capability`; undefined once {@link MAX_CAPABILITIES} others are tracked. */
  #seriesOf(capability: string): Series | undefined {
    let s = this.#series.get(capability);
    if (!s) {
      if (this.#series.size >= MAX_CAPABILITIES) {
        if (!this.#warnedFull) this.#bus.log.warn({ capability, max: MAX_CAPABILITIES }, "monitor stats: too many capabilities; further ones are not charted");
        this.#warnedFull = true;
        return undefined;
      }
      this.#series.set(capability, (s = new Series()));
    }
    return s;
  }

  // ---- task events ------------------------------------------------------

  /**
   * Reads the task events from {@link BACKFILL_MS} ago, then live, until
   * stopped; a reading that fails is opened again after the last event
   * handled.
   */
  async #read(opened: () => void): Promise<void> {
    let from: number | undefined;
    // The event being handled, and how many times in a row handling it failed: the third failure skips it.
    let current: number | undefined;
    let failures = 0;
    while (!this.#stopped) {
      try {
        const reading = await this.#consume(from);
        opened();
        if (this.#stopped) {
          reading.stop();
          break;
        }
        this.#stopReading = reading.stop;
        try {
          for await (const m of reading.messages) {
            if (m.seq !== current) failures = 0;
            current = m.seq;
            await this.#onEvent(m);
            from = m.seq + 1;
          }
        } finally {
          reading.stop();
        }
        // The consumer ended without being stopped: open it again (after a pause, should it keep ending).
        if (!this.#stopped) await sleep(250);
      } catch (err) {
        opened();
        // Stopped, or its connection closed for good (the monitor's owner closed it first): nothing more to read.
        if (this.#stopped || this.#bus.nc.isClosed()) break;
        if (current !== undefined && from !== current + 1 && ++failures >= 3) {
          this.#bus.log.warn({ err: String(err), sequence: current }, "monitor stats: skipping a task event that could not be handled");
          from = current + 1;
          failures = 0;
        } else this.#bus.log.warn({ err: String(err) }, "monitor stats: reading the task events failed; retrying");
        await sleep(1000);
      }
    }
  }

  /** An ordered consumer on the events stream: from `from`, or from the first event stored in the last {@link BACKFILL_MS}. */
  async #consume(from?: number): Promise<{ messages: AsyncIterable<JsMsg>; stop(): void }> {
    const bus = this.#bus;
    await bus.ensureTasks();
    const subject = bus.subjects.allTaskEventLogs();
    return (await readStream(bus, "EVENTS", subject, from ?? new Date(Date.now() - BACKFILL_MS)))!;
  }

  async #onEvent(m: JsMsg): Promise<void> {
    let event: TaskEvent;
    try {
      event = m.json<TaskEvent>();
    } catch {
      return;
    }
    if (!("statusUpdate" in event) || !isTerminal(event.statusUpdate.status.state)) return;
    // The subject is `<store prefix>.events.<submitter>.<task>`.
    const taskId = m.subject.slice(m.subject.lastIndexOf(".") + 1);
    const entry = this.#tasks.get(taskId) ?? {};
    if (entry.ended) return;
    // Read before the task is marked: a read that fails is tried again with this event.
    const facts = await this.#factsOf(taskId, m.subject);
    entry.ended = true;
    this.#tasks.set(taskId, entry);
    if (!facts) return;
    const series = this.#seriesOf(facts.capability);
    if (!series) return;
    const bucket = Math.floor(m.time.getTime() / BUCKET_MS);
    this.#advance(bucket);
    const { state, timestamp } = event.statusUpdate.status;
    series.ended(bucket, endedAs(state));
    const end = Date.parse(timestamp);
    if (facts.createdAt !== undefined && Number.isFinite(end) && end >= facts.createdAt && this.#open?.bucket === bucket) this.#open.add(facts.capability, end - facts.createdAt);
  }

  /**
   * Moves the bucket being filled to `bucket`: events come in the order
   * the stream stored them, so an earlier one is complete and its
   * latencies are reduced to their percentiles.
   */
  #advance(bucket: number): void {
    const open = this.#open;
    if (open?.bucket === bucket || (open && open.bucket > bucket)) return;
    if (open) {
      for (const capability of open.samples.keys()) {
        const p = open.percentiles(capability);
        if (p) this.#series.get(capability)?.percentiles(open.bucket, p);
      }
    }
    this.#open = new OpenBucket(bucket);
  }

  /**
   * The capability and creation time of task `taskId`, from its snapshot
   * as the first connection that may see it reads it; undefined when none
   * may (or it is gone).
   */
  async #factsOf(taskId: string, subject: string): Promise<TaskFacts | undefined> {
    for (const bus of this.#buses) {
      let task;
      try {
        task = await (await bus.taskHandle(taskId)).stored();
      } catch (err) {
        // Not this connection's to see (or refused as forged): the next one may. Anything else is tried again.
        if (isAgentBusError(err, "TASK_NOT_FOUND") || isAgentBusError(err, "BAD_SIGNATURE")) continue;
        throw err;
      }
      const { capability, createdAt, scheduledAt } = task.metadata;
      const created = typeof createdAt === "number" ? createdAt : typeof scheduledAt === "number" ? scheduledAt : await this.#firstEventTime(subject);
      return { capability, createdAt: created };
    }
    return undefined;
  }

  /** When the events stream stored the first event on `subject` (a task created before `metadata.createdAt` was recorded). */
  async #firstEventTime(subject: string): Promise<number | undefined> {
    const jsm = await jetstreamManager(this.#bus.nc);
    const first = await jsm.direct.getMessage(this.#bus.subjects.stream("EVENTS"), { seq: 0, next_by_subj: subject }).catch(() => null);
    return first?.time.getTime();
  }

  // ---- samples ----------------------------------------------------------

  /** Samples now, and again in the middle of each next bucket (so each bucket gets one sample). */
  #sample(): void {
    if (this.#stopped || this.#bus.nc.isClosed()) return;
    const bucket = Math.floor(Date.now() / BUCKET_MS);
    void this.#sampleInto(bucket).catch((err: unknown) => {
      if (!this.#stopped) this.#bus.log.warn({ err: String(err) }, "monitor stats: sampling the work and dead-letter streams failed");
    });
    const now = Date.now();
    this.#sampler = setTimeout(() => this.#sample(), BUCKET_MS - (now % BUCKET_MS) + BUCKET_MS / 2);
    this.#sampler.unref();
  }

  async #sampleInto(bucket: number): Promise<void> {
    const bus = this.#bus;
    const [workload, dead] = await Promise.all([bus.workload(), this.#deadLetters()]);
    if (this.#stopped) return;
    for (const c of workload.capabilities) {
      const series = this.#seriesOf(c.capability);
      series?.gauge(bucket, "queued", c.pending.high + c.pending.normal + c.pending.low);
      series?.gauge(bucket, "running", c.inProgress);
    }
    for (const [capability, n] of dead) this.#seriesOf(capability)?.gauge(bucket, "deadLetters", n);
  }

  /** Dead letters stored per capability (`MESH_<T>_DLQ`, one count per subject `<store prefix>.dlq.<cap>`). */
  async #deadLetters(): Promise<Map<string, number>> {
    const bus = this.#bus;
    const prefix = `${bus.subjects.storePrefix}.dlq.`;
    const jsm = await jetstreamManager(bus.nc);
    let subjects: Record<string, number>;
    try {
      subjects = (await jsm.streams.info(bus.subjects.stream("DLQ"), { subjects_filter: `${prefix}>` })).state.subjects ?? {};
    } catch (err) {
      if (/not found/i.test(String(err))) return new Map();
      throw err;
    }
    return new Map(Object.entries(subjects).filter(([s]) => s.startsWith(prefix)).map(([s, n]) => [s.slice(prefix.length), n]));
  }
}

/**
 * The charts of every tenant a monitor serves: one {@link TenantStats} per
 * task plane among its connections (`edge.auth.buses()`), each on the
 * connections to it (the monitor's own first).
 */
export class MonitorStats {
  readonly #tenants = new Map<string, TenantStats>();

  private constructor() {}

  static async start(buses: readonly Bus[]): Promise<MonitorStats> {
    const byPlane = new Map<string, Bus[]>();
    for (const bus of buses) {
      const key = planeOf(bus);
      byPlane.set(key, [...(byPlane.get(key) ?? []), bus]);
    }
    const stats = new MonitorStats();
    await Promise.all([...byPlane].map(async ([key, group]) => stats.#tenants.set(key, await TenantStats.start(group))));
    return stats;
  }

  /** The charts of the tenant `bus` is connected to. */
  read(bus: Bus, minutes: number): Stats {
    const tenant = this.#tenants.get(planeOf(bus));
    return tenant ? tenant.read(minutes) : { bucketMs: BUCKET_MS, now: new Date().toISOString(), capabilities: [] };
  }

  async stop(): Promise<void> {
    await Promise.all([...this.#tenants.values()].map((t) => t.stop()));
  }
}

/** A task plane: the tenant's, or a federated bus's region's (its streams' names). */
const planeOf = (bus: Bus): string => bus.subjects.stream("EVENTS");
