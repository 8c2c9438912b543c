/**
 * Recurring tasks, from the caller's side: `bus.schedules`. A schedule runs
 * a capability with the same input on a cron expression (in a time zone)
 * or at a fixed interval; each run is an ordinary task of the schedule's
 * creator, linked to it by `metadata.schedule`. Needs nats-server 2.14 or
 * later (`SERVER_TOO_OLD` before). See `core/store/schedules.ts` for how
 * they are kept.
 */
import type { Runtime } from "../runtime.js";
import type { Schedule, ScheduleSpec } from "../store/schedules.js";

export type { Schedule, ScheduleSpec, ScheduleTiming } from "../store/schedules.js";

/** Options of {@link Schedules.list} and {@link Schedules.get}. */
export interface ScheduleQuery {
  /** Whose schedules: default this identity's; `"*"` every identity's (for an identity the server lets read them, an admin's). */
  creator?: string;
}

/** This identity's recurring schedules (see {@link ScheduleSpec}). */
export class Schedules {
  readonly #rt: Runtime;

  /** @internal Built by the bus. */
  constructor(rt: Runtime) {
    this.#rt = rt;
  }

  /**
   * Creates a schedule, or replaces the one with the same id; resolves with
   * it as stored, its next run included. `INVALID_INPUT` for a bad cron
   * expression, interval or time zone.
   */
  async create(spec: ScheduleSpec): Promise<Schedule> {
    return (await this.#rt.schedules()).put(spec);
  }

  /** One schedule by id; undefined when there is none. */
  async get(id: string, query: ScheduleQuery = {}): Promise<Schedule | undefined> {
    return (await this.#rt.schedules()).get(id, query.creator);
  }

  /** The schedules of this identity (or `query.creator`'s), with their next runs. */
  async list(query: ScheduleQuery = {}): Promise<Schedule[]> {
    return (await this.#rt.schedules()).list(query.creator);
  }

  /** Stops a schedule's ticks until {@link resume}; `SCHEDULE_NOT_FOUND` when there is no such schedule. */
  async pause(id: string): Promise<Schedule> {
    return (await this.#rt.schedules()).setPaused(id, true);
  }

  /** Starts a paused schedule's ticks again (an interval counts from now). */
  async resume(id: string): Promise<Schedule> {
    return (await this.#rt.schedules()).setPaused(id, false);
  }

  /** Deletes a schedule; false when there was none. Runs already started go on. */
  async delete(id: string): Promise<boolean> {
    return (await this.#rt.schedules()).delete(id);
  }
}
