/**
 * Shared session state: one JSON object per A2A context, kept in the
 * tenant's `mesh_<t>_sessions` KV bucket so every agent taking part in a
 * conversation reads and writes the same state, whichever process or server
 * it runs on.
 *
 * Concurrent writers are safe through {@link Session.update}: it is a
 * compare-and-set on the key's revision, retried on conflict, so no write is
 * lost when two agents change the same session at the same time.
 *
 * @example
 * const sessions = await Sessions.open(kvm, subjects, { replicas: 1 });
 * const s = sessions.session<{ turns: number }>(contextId);
 * await s.update((cur) => ({ turns: (cur?.turns ?? 0) + 1 }));
 */
import type { KV, KvEntry, Kvm } from "@nats-io/kv";
import { AgentBusError } from "../wire/errors.js";
import { compareAndSet, ensureBucket, insisted } from "../infra/jetstream.js";
import { checkId, type Subjects } from "../wire/subjects.js";

/** Revisions kept per session when {@link SessionsOptions.history} is not given. */
export const DEFAULT_SESSION_HISTORY = 16;
/** The most revisions a NATS KV bucket keeps per key. */
export const MAX_SESSION_HISTORY = 64;
/** Attempts {@link Session.update} makes when {@link UpdateOptions.maxAttempts} is not given. */
export const DEFAULT_UPDATE_ATTEMPTS = 20;

/** One stored value of a session. */
export interface SessionEntry<T> {
  /** The session state. */
  value: T;
  /** KV revision (stream sequence) of this value; grows with every write to the bucket. */
  revision: number;
  /**
   * When it was stored. Server time for values read back ({@link Session.get},
   * {@link Session.history}); the writer's clock for the entry returned by
   * {@link Session.update}, which saves a round trip to read it back.
   */
  updatedAt: Date;
}

/** Options of {@link Session.update}. */
export interface UpdateOptions {
  /** Read-modify-write attempts before giving up with `UNAVAILABLE` (default {@link DEFAULT_UPDATE_ATTEMPTS}). */
  maxAttempts?: number;
}

/** Options of {@link Session.history}. */
export interface HistoryOptions {
  /** Return only the most recent `limit` values (still oldest first). */
  limit?: number;
}

/** Options of {@link Sessions.open}. */
export interface SessionsOptions {
  /** Replicas of the bucket (1 single server, 3 in a 3-node cluster); absent: adopt what exists, 1 when creating. */
  replicas?: number;
  /** Revisions kept per session, 1 to {@link MAX_SESSION_HISTORY} (default {@link DEFAULT_SESSION_HISTORY}). */
  history?: number;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Serializes a session value, refusing anything that is not a JSON object:
 * sessions are merged field by field by their users, so a bare string or an
 * array would break every other writer's `{...current, x}`.
 */
function encode(contextId: string, value: unknown): string {
  if (!isPlainObject(value)) {
    throw new AgentBusError("MISUSE", `session ${contextId}: value must be a JSON object, got ${describe(value)}`);
  }
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    // Cycles and BigInt values cannot be stored.
    throw new AgentBusError("MISUSE", `session ${contextId}: value is not JSON-serializable: ${(err as Error).message}`, {
      cause: err,
    });
  }
  // A toJSON() may turn an object into something else; what is stored must
  // still read back as an object.
  if (json === undefined || !json.startsWith("{")) {
    throw new AgentBusError("MISUSE", `session ${contextId}: value must serialize to a JSON object`);
  }
  return json;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value;
}

/**
 * One session: the shared state of one A2A context. Get it from
 * {@link Sessions.session}. Holds no state of its own, so any number of
 * handles (in any number of processes) may point at the same context.
 */
export class Session<T extends Record<string, unknown> = Record<string, unknown>> {
  /** The A2A context id, also the KV key. */
  readonly contextId: string;
  readonly #kv: KV;

  /** @internal Use {@link Sessions.session}. */
  constructor(kv: KV, contextId: string) {
    this.#kv = kv;
    this.contextId = checkId(contextId, "context id");
  }

  /** The current value, or undefined when the session was never written or was deleted. */
  async get(): Promise<SessionEntry<T> | undefined> {
    const e = await this.#kv.get(this.contextId);
    return e && e.operation === "PUT" ? this.#decode(e) : undefined;
  }

  /**
   * Replaces the value unconditionally (last writer wins) and returns its
   * revision. Use {@link update} when other agents may write concurrently.
   * @throws AgentBusError `INVALID_INPUT` when `value` is not a JSON object.
   */
  async put(value: T): Promise<number> {
    return this.#kv.put(this.contextId, encode(this.contextId, value));
  }

  /**
   * Read-modify-write without lost updates: reads the current value, applies
   * `fn` and writes the result only if nobody wrote in between (compare-and-
   * set on the revision); on a conflict it re-reads and tries again after a
   * jittered backoff.
   *
   * `fn` may therefore run several times and must only compute the new value
   * from `current` (no side effects). It gets a fresh copy each time, so it
   * may mutate it. Errors thrown by `fn` abort the update and are rethrown.
   *
   * @returns the value written and its revision.
   * @throws AgentBusError `INVALID_INPUT` when `fn` returns a non-object;
   *   `UNAVAILABLE` when every one of `maxAttempts` attempts lost a race.
   */
  async update(fn: (current: T | undefined) => T | Promise<T>, options: UpdateOptions = {}): Promise<SessionEntry<T>> {
    const maxAttempts = options.maxAttempts ?? DEFAULT_UPDATE_ATTEMPTS;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
      throw new AgentBusError("MISUSE", `maxAttempts must be a positive integer, got ${maxAttempts}`);
    }
    return compareAndSet(
      () => this.#kv.get(this.contextId),
      async (e: KvEntry | null) => {
        const current = e && e.operation === "PUT" ? this.#decode(e).value : undefined;
        const json = encode(this.contextId, await fn(current));
        // The expected revision is the key's last one, whatever it is: a live
        // value, or the marker a delete left (revision of that marker, so a
        // concurrent write after the delete is still detected). Only a key
        // with no message at all needs create (expected revision 0).
        const revision = e ? await this.#kv.update(this.contextId, json, e.revision) : await this.#kv.create(this.contextId, json);
        return { value: JSON.parse(json) as T, revision, updatedAt: new Date() };
      },
      { maxAttempts, what: `session ${this.contextId}` },
    );
  }

  /**
   * Past values, oldest first, ending with the current one. The bucket keeps
   * the last `history` revisions per session (see {@link SessionsOptions});
   * older ones are gone. Deletion markers carry no value and are skipped.
   * @throws AgentBusError `INVALID_INPUT` when `limit` is not a positive integer.
   */
  async history(options: HistoryOptions = {}): Promise<SessionEntry<T>[]> {
    const { limit } = options;
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
      throw new AgentBusError("MISUSE", `limit must be a positive integer, got ${limit}`);
    }
    const out: SessionEntry<T>[] = [];
    const it = await this.#kv.history({ key: this.contextId });
    try {
      for await (const e of it) {
        if (e.operation === "PUT") out.push(this.#decode(e));
      }
    } finally {
      // A corrupt entry throws mid-way: stop the consumer behind the iterator.
      it.stop();
    }
    return limit === undefined ? out : out.slice(-limit);
  }

  /**
   * Forgets the session: its value and its history (a KV purge, which
   * leaves a single marker). A later {@link update} starts from `undefined`.
   */
  async delete(): Promise<void> {
    await this.#kv.purge(this.contextId);
  }

  #decode(e: KvEntry): SessionEntry<T> {
    let value: unknown;
    try {
      value = e.json();
    } catch (err) {
      throw this.#corrupt(err);
    }
    // Written by something other than this module: refuse to hand it to
    // code that expects an object (and to overwrite it blindly in update).
    if (!isPlainObject(value)) throw this.#corrupt();
    return { value: value as T, revision: e.revision, updatedAt: e.created };
  }

  #corrupt(cause?: unknown): AgentBusError {
    return new AgentBusError("INVALID_INPUT", `session ${this.contextId} holds a value that is not a JSON object; delete it`, {
      cause,
    });
  }
}

/**
 * The tenant's session store: the `mesh_<t>_sessions` bucket, created on
 * first use. Hands out {@link Session} handles by context id.
 */
export class Sessions {
  /** The underlying bucket. */
  readonly kv: KV;

  private constructor(kv: KV) {
    this.kv = kv;
  }

  /**
   * Opens the bucket, creating it when missing. Idempotent: opening an
   * existing bucket with the same settings just binds to it.
   * @throws AgentBusError `INVALID_INPUT` when `history` is outside 1..64;
   *   `CONFIG_MISMATCH` when the bucket exists with other settings (it is
   *   left unchanged).
   */
  static async open(kvm: Kvm, subjects: Subjects, options: SessionsOptions): Promise<Sessions> {
    const history = options.history ?? DEFAULT_SESSION_HISTORY;
    if (!Number.isInteger(history) || history < 1 || history > MAX_SESSION_HISTORY) {
      throw new AgentBusError("MISUSE", `session history must be an integer from 1 to ${MAX_SESSION_HISTORY}, got ${history}`);
    }
    const kv = await ensureBucket(kvm, subjects.bucket("sessions"), { replicas: options.replicas ?? 1, history }, insisted(options.replicas));
    return new Sessions(kv);
  }

  /**
   * The session of one A2A context. Cheap: no I/O until it is used.
   * @throws AgentBusError `INVALID_INPUT` when `contextId` is not `[A-Za-z0-9_-]+` (a UUID is fine).
   */
  session<T extends Record<string, unknown> = Record<string, unknown>>(contextId: string): Session<T> {
    return new Session<T>(this.kv, contextId);
  }
}
