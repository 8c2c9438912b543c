import { createHash } from "node:crypto";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { AgentBusError } from "../wire/errors.js";

/**
 * Remembers message ids for at least `windowMs`, in two generations that
 * rotate: O(1) per message and memory bounded by the traffic of two windows.
 * Pair it with a timestamp check of the same window so an id older than the
 * memory is refused as expired rather than accepted again.
 */
export class ReplayGuard {
  #current = new Set<string>();
  #previous = new Set<string>();
  #rotatedAt = Number.NEGATIVE_INFINITY;
  readonly #generationMs: number;

  constructor(windowMs: number) {
    // A message is accepted while |now - ts| <= window, so a replay can arrive
    // up to 2×window after the first copy: each generation spans that.
    this.#generationMs = 2 * windowMs;
  }

  /** Records `id`; false when it was already seen. */
  firstSeen(id: string, now = Date.now()): boolean {
    if (now - this.#rotatedAt >= this.#generationMs) {
      this.#previous = now - this.#rotatedAt >= 2 * this.#generationMs ? new Set() : this.#current;
      this.#current = new Set();
      this.#rotatedAt = now;
    }
    if (this.#current.has(id) || this.#previous.has(id)) return false;
    this.#current.add(id);
    return true;
  }
}

/**
 * Max age of the shared replay memory for an envelope window: a message
 * stamped `ts` is accepted while the receiver's clock is in
 * `[ts − window, ts + window]`, so a copy can arrive up to 2×window after the
 * first one was claimed. Windows up to the default (60 s) share one max age
 * (2 min), so processes of one tenant with shorter windows (tests, tools)
 * agree on the bucket.
 */
export const replayMaxAgeMs = (windowMs: number): number => 2 * Math.max(windowMs, 60_000);

// KV keys allow `[-/=._A-Za-z0-9]`; a dot separates tokens. Sender ids (nkeys)
// and the library's ids (nuids, task and message ids) fit; anything else is
// hashed behind `=`, which a plain id never contains.
const PLAIN_ID = /^[-_A-Za-z0-9]{1,128}$/;

/** The replay bucket's key for `(sender, Nats-Msg-Id)`. */
export function replayKey(from: string, id: string): string {
  return PLAIN_ID.test(id) ? `${from}.${id}` : `${from}.=${createHash("sha256").update(id).digest("base64url")}`;
}

/**
 * The replay memory shared by every receiver of a tenant (`mesh_<t>_replay`,
 * history 1, max age {@link replayMaxAgeMs}): survives agent restarts and is
 * common to all replicas of a capability. A receiver claims `(sender, id)`
 * with a create (compare-and-set on "no entry yet") before the handler runs;
 * the second claim of the same pair, anywhere, fails.
 */
export class SharedReplay {
  readonly #kv: KV;

  constructor(kv: KV) {
    this.#kv = kv;
  }

  /**
   * Claims `(from, id)`: resolves when this is the first claim within the
   * bucket's max age; throws `REPLAYED` when someone claimed it already, and
   * `UNAVAILABLE` when the bucket cannot be written (the message is refused:
   * a receiver that cannot check does not run it).
   */
  async claim(from: string, id: string): Promise<void> {
    try {
      await this.#kv.create(replayKey(from, id), "");
    } catch (err) {
      if (err instanceof JetStreamApiError && (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)) {
        throw new AgentBusError("REPLAYED", `message ${id} was already received`);
      }
      throw new AgentBusError("UNAVAILABLE", `replay memory unavailable: ${(err as Error).message}`, { cause: err });
    }
  }
}
