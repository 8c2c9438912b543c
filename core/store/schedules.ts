/**
 * Recurring tasks: schedules stored on the bus (nats-server 2.14+).
 *
 * A schedule is two things in JetStream:
 *
 * - its **record**, signed by its creator, in `mesh_<t>_schedules` under
 *   `<creator>.<id>`: the capability, the input, when, and whether it is
 *   paused. Listing reads the records; a worker reads one at each tick.
 * - its **schedule message** on `<root>.<t>.schedule.<creator>.<id>` in the
 *   work-queue stream `MESH_<T>_SCHEDULES`, carrying `Nats-Schedule` (a
 *   6-field cron expression or `@every <duration>`) and
 *   `Nats-Schedule-Time-Zone`: the server publishes a tick from it to
 *   `<root>.<t>.tick.<cap>.<id>` at each time, whatever process is running.
 *   Replacing it is a roll-up on its subject; pausing or deleting rolls it
 *   up into a message without a schedule that expires.
 *
 * Each tick is taken once by one worker of the capability (a durable
 * consumer shared by its replicas), which runs it as an ordinary task of the
 * creator, its id derived from the schedule and the tick's time, so a tick
 * delivered again never runs twice (see the agent's worker).
 */
import { randomUUID } from "node:crypto";
import { headers as natsHeaders } from "@nats-io/nats-core";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { Cron } from "croner";
import { AgentBusError } from "../wire/errors.js";
import { toMessage, type Input } from "../wire/message.js";
import type { Message } from "../wire/protocol.js";
import { TASK_PRIORITIES, type TaskPriority } from "../wire/task.js";
import { checkCapability, checkId, type Subjects } from "../wire/subjects.js";
import type { Identity } from "../security/identity.js";
import { signEntry, verifyEntry } from "./policy.js";
import { retryJs } from "../infra/jetstream.js";

/** When a schedule runs and what each run carries: shared by {@link ScheduleSpec} and {@link Schedule}. */
export interface ScheduleTiming {
  /**
   * When it runs, as cron: 5 fields (minute hour day-of-month month
   * day-of-week), 6 with seconds first, or `@hourly`, `@daily`, `@weekly`,
   * `@monthly`, `@yearly`. Lists, ranges, steps and names (`mon-fri`) are
   * taken; `?`, `L` and `#` are not. Give `cron` or `everyMs`. Stored in
   * the server's 6-field form.
   */
  cron?: string;
  /** Or every this many ms (at least 1000), counted from when the schedule is created or resumed. */
  everyMs?: number;
  /** IANA time zone of `cron` (default UTC), e.g. `Europe/Berlin`. */
  timeZone?: string;
  /** Each run's deadline, ms after its tick: a run not started by then ends FAILED (see `SubmitOptions.ttlMs`). */
  ttlMs?: number;
  /** Metadata copied onto every run. */
  metadata?: Record<string, unknown>;
  /** Every run's priority (default normal; see `SubmitOptions.priority`). */
  priority?: TaskPriority;
}

/** What to run, and when: the argument of `bus.schedules.create`. */
export interface ScheduleSpec extends ScheduleTiming {
  /** Schedule id (letters, digits, `-`, `_`; at most 64); default a random one. Creating an id that exists replaces that schedule. */
  id?: string;
  /** The capability each run is submitted to. */
  capability: string;
  /** The input of every run. */
  input: Input;
}

/** A stored schedule, as listed. */
export interface Schedule extends ScheduleTiming {
  id: string;
  /** The identity that created it: every run is its task. */
  creator: string;
  capability: string;
  /** The input of every run. */
  input: Message;
  /** When it was created or last changed (paused, resumed), ms since the epoch. */
  updatedAt: number;
  paused: boolean;
  /** The next tick, ms since the epoch (absent while paused). */
  nextRunAt?: number;
}

/** The payload signed in a record (everything but the id and creator, which its key names). */
interface Payload extends ScheduleTiming, Record<string, unknown> {
  capability: string;
  input: Message;
  paused: boolean;
}

/** The {@link ScheduleTiming} fields, copied between a spec, a record and a listed schedule when present. */
const TIMING = ["cron", "everyMs", "timeZone", "ttlMs", "metadata", "priority"] as const;
const timingOf = (from: ScheduleTiming): ScheduleTiming => Object.fromEntries(TIMING.filter((k) => from[k] !== undefined).map((k) => [k, from[k]]));

const SCHEDULE_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** The server's schedule headers (nats-server 2.14+, ADR-51). */
const H = { schedule: "Nats-Schedule", target: "Nats-Schedule-Target", timeZone: "Nats-Schedule-Time-Zone", scheduler: "Nats-Scheduler", rollup: "Nats-Rollup", ttl: "Nats-TTL" } as const;
/** The predefined schedules nats-server knows, with their cron form. */
const PREDEFINED: Record<string, string> = { "@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *", "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *", "@hourly": "0 0 * * * *" };

/**
 * The cron expression in the server's 6-field form (seconds first), checked
 * by a cron parser; `INVALID_INPUT` when it does not parse.
 */
function sixFields(cron: string, timeZone: string | undefined): string {
  const text = cron.trim().replace(/\s+/g, " ");
  const fields = PREDEFINED[text.toLowerCase()] ?? (text.split(" ").length === 5 ? `0 ${text}` : text);
  if (fields.split(" ").length !== 6 || /[?L#W]/.test(fields)) throw new AgentBusError("INVALID_INPUT", `cron ${JSON.stringify(cron)}: 5 or 6 fields (seconds first) or @hourly, @daily, @weekly, @monthly, @yearly; ? L # W are not supported`);
  cronOf(fields, timeZone, cron);
  return fields;
}

function cronOf(fields: string, timeZone: string | undefined, what: string): Cron {
  try {
    const c = new Cron(fields, { paused: true, ...(timeZone && { timezone: timeZone }), legacyMode: true });
    c.nextRun(); // a bad time zone shows here
    return c;
  } catch (err) {
    throw new AgentBusError("INVALID_INPUT", `${timeZone ? `cron ${JSON.stringify(what)} in ${timeZone}` : `cron ${JSON.stringify(what)}`}: ${(err as Error).message}`);
  }
}

/** The next tick of a schedule after `now`, ms since the epoch. */
export function nextRunOf(p: Pick<Payload, "cron" | "everyMs" | "timeZone" | "paused">, updatedAt: number, now = Date.now()): number | undefined {
  if (p.paused) return undefined;
  if (p.everyMs !== undefined) return updatedAt + Math.max(1, Math.ceil((now - updatedAt) / p.everyMs)) * p.everyMs;
  if (p.cron === undefined) return undefined;
  return cronOf(p.cron, p.timeZone, p.cron).nextRun(new Date(now))?.getTime();
}

/** Parses the `Nats-Scheduler` header of a tick: the creator and id of the schedule that produced it. */
export function tickSource(s: Subjects, scheduler: string | undefined): { creator: string; id: string } | undefined {
  const prefix = `${s.prefix}.schedule.`;
  if (!scheduler?.startsWith(prefix)) return undefined;
  const [creator, id, ...rest] = scheduler.slice(prefix.length).split(".");
  if (!creator || !id || rest.length > 0) return undefined;
  return { creator, id };
}

/** The name of the header a tick names its schedule in. */
export const SCHEDULER_HEADER = H.scheduler;

/**
 * The schedules of a tenant: records in `mesh_<t>_schedules`, schedule
 * messages in `MESH_<T>_SCHEDULES`. Writes are this identity's own
 * schedules; reads verify each record's signature against its key.
 */
export class ScheduleStore {
  constructor(
    readonly records: KV,
    readonly js: JetStreamClient,
    readonly subjects: Subjects,
    readonly identity: Identity,
  ) {}

  /** Creates (or replaces) one of this identity's schedules; resolves with it as stored. */
  async put(spec: ScheduleSpec): Promise<Schedule> {
    if (!spec || typeof spec !== "object") throw new AgentBusError("INVALID_INPUT", "a schedule needs a capability, an input and cron or everyMs");
    const id = spec.id ?? randomUUID().replaceAll("-", "");
    if (typeof id !== "string" || !SCHEDULE_ID.test(id)) throw new AgentBusError("INVALID_INPUT", `invalid schedule id ${JSON.stringify(id)}: letters, digits, - and _, at most 64`);
    checkCapability(spec.capability);
    if ((spec.cron === undefined) === (spec.everyMs === undefined)) throw new AgentBusError("INVALID_INPUT", "give cron or everyMs (one of them)");
    if (spec.everyMs !== undefined && (!Number.isSafeInteger(spec.everyMs) || spec.everyMs < 1000)) throw new AgentBusError("INVALID_INPUT", "everyMs must be a whole number of ms, at least 1000");
    if (spec.timeZone !== undefined && (typeof spec.timeZone !== "string" || spec.cron === undefined)) throw new AgentBusError("INVALID_INPUT", "timeZone is an IANA zone name, and applies to cron");
    if (spec.ttlMs !== undefined && (!Number.isSafeInteger(spec.ttlMs) || spec.ttlMs <= 0)) throw new AgentBusError("INVALID_INPUT", "ttlMs must be a whole number of ms > 0");
    if (spec.priority !== undefined && !TASK_PRIORITIES.includes(spec.priority)) throw new AgentBusError("INVALID_INPUT", `priority must be one of ${TASK_PRIORITIES.join(", ")}`);
    const cron = spec.cron === undefined ? undefined : sixFields(String(spec.cron), spec.timeZone);
    const input = { ...toMessage(spec.input) };
    delete input.taskId;
    delete input.contextId;
    const payload: Payload = {
      ...timingOf({ ...spec, cron, priority: spec.priority === "normal" ? undefined : spec.priority }),
      capability: spec.capability,
      input,
      paused: false,
    };
    const at = Date.now();
    await this.#write(id, payload, at);
    try {
      await this.#arm(id, payload);
    } catch (err) {
      // The server refused the schedule: no record of it stays either.
      await retryJs(() => this.records.delete(this.#key(this.identity.id, id))).catch(() => {});
      throw err;
    }
    return this.#view(this.identity.id, id, payload, at);
  }

  /** One schedule of `creator` (default this identity); undefined when there is none. */
  async get(id: string, creator = this.identity.id): Promise<Schedule | undefined> {
    const e = await retryJs(() => this.records.get(this.#key(creator, id)));
    if (!e || e.operation !== "PUT") return undefined;
    return this.#read(creator, id, e.json());
  }

  /**
   * The schedules of `creator` (default this identity; `"*"`: every
   * identity's, for an identity the server lets read them all), by id.
   */
  async list(creator: string = this.identity.id): Promise<Schedule[]> {
    if (creator !== "*") checkId(creator, "creator id");
    const keys: string[] = [];
    for await (const k of await this.records.keys(`${creator}.*`)) keys.push(k);
    const found = await Promise.all(keys.map(async (k) => {
      const [c, id] = k.split(".") as [string, string];
      return this.get(id, c).catch(() => undefined); // a record that does not verify is not listed
    }));
    return found.filter((s): s is Schedule => s !== undefined).sort((a, b) => (a.creator + a.id < b.creator + b.id ? -1 : 1));
  }

  /** Pauses (no ticks) or resumes one of this identity's schedules; `SCHEDULE_NOT_FOUND` when it has no such schedule. */
  async setPaused(id: string, paused: boolean): Promise<Schedule> {
    const current = await this.get(id);
    if (!current) throw new AgentBusError("SCHEDULE_NOT_FOUND", `schedule ${id} not found`);
    const payload = payloadOf(current);
    if (current.paused === paused) return current;
    payload.paused = paused;
    const at = Date.now();
    await this.#write(id, payload, at);
    if (paused) await this.#disarm(id);
    else await this.#arm(id, payload);
    return this.#view(this.identity.id, id, payload, at);
  }

  /** Deletes one of this identity's schedules: no tick after this resolves (runs already started go on). */
  async delete(id: string): Promise<boolean> {
    const current = await this.get(id);
    if (!current) return false;
    await this.#disarm(id);
    await retryJs(() => this.records.delete(this.#key(this.identity.id, id)));
    return true;
  }

  #key(creator: string, id: string): string {
    return `${checkId(creator, "creator id")}.${checkId(id, "schedule id")}`;
  }

  async #write(id: string, payload: Payload, at: number): Promise<void> {
    const key = this.#key(this.identity.id, id);
    const value = signEntry(this.identity, this.subjects.tenant, "schedules", key, payload, at);
    await retryJs(() => this.records.put(key, JSON.stringify(value)));
  }

  #read(creator: string, id: string, value: unknown): Schedule {
    const key = this.#key(creator, id);
    const entry = verifyEntry(this.subjects.tenant, "schedules", key, value);
    if (entry.by !== creator) throw new AgentBusError("BAD_SIGNATURE", `schedule ${key} is signed by ${entry.by}, not by its creator`);
    return this.#view(creator, id, entry.payload as Payload, entry.at);
  }

  #view(creator: string, id: string, p: Payload, at: number): Schedule {
    const next = nextRunOf(p, at);
    return { id, creator, capability: p.capability, input: p.input, ...timingOf(p), updatedAt: at, paused: p.paused, ...(next !== undefined && { nextRunAt: next }) };
  }

  /** Puts the schedule message in force (replacing any earlier one on its subject). */
  async #arm(id: string, p: Payload): Promise<void> {
    const h = natsHeaders();
    h.set(H.schedule, p.cron ?? `@every ${p.everyMs}ms`);
    if (p.timeZone) h.set(H.timeZone, p.timeZone);
    h.set(H.target, this.subjects.tick(p.capability, id));
    h.set(H.rollup, "sub");
    try {
      await retryJs(() => this.js.publish(this.subjects.schedule(this.identity.id, id), JSON.stringify({ schedule: id }), { headers: h }));
    } catch (err) {
      const text = String((err as Error).message ?? err);
      if (/schedule/i.test(text) && /invalid/i.test(text)) throw new AgentBusError("INVALID_INPUT", `nats-server refused the schedule: ${text}`, { cause: err });
      throw err;
    }
  }

  /** Takes the schedule message out of force: rolled up into one without a schedule, which expires. */
  async #disarm(id: string): Promise<void> {
    const h = natsHeaders();
    h.set(H.rollup, "sub");
    h.set(H.ttl, "1s");
    await retryJs(() => this.js.publish(this.subjects.schedule(this.identity.id, id), JSON.stringify({ schedule: id, off: true }), { headers: h }));
  }
}

/** The signed payload of a schedule as listed (to write it again changed). */
function payloadOf(s: Schedule): Payload {
  return { ...timingOf(s), capability: s.capability, input: s.input, paused: s.paused };
}
