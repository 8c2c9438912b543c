/**
 * Polling until a condition holds. Servers announce readiness in several
 * ways (log lines, ports files, monitoring endpoints) but the only honest
 * test is to ask the real thing repeatedly until it answers.
 */
import { setTimeout as sleep } from "node:timers/promises";

/** Options for {@link pollUntil}. */
export interface PollOptions {
  /** Give up after this long. */
  timeoutMs: number;
  /** Pause between attempts (default 100 ms). */
  intervalMs?: number;
  /** Describes what we wait for, for the timeout message. */
  what: string;
}

/**
 * Calls `check` until it returns a value other than `undefined`, and
 * returns that value. A thrown error counts as "not yet" unless it is
 * marked fatal with {@link fatal}; the last error or reason is kept for the
 * timeout message so failures explain themselves.
 */
export async function pollUntil<T>(
  check: () => Promise<T | undefined> | T | undefined,
  { timeoutMs, intervalMs = 100, what }: PollOptions,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      if (err instanceof FatalPollError) throw err.cause;
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last})` : ""}`);
    }
    await sleep(intervalMs);
  }
}

class FatalPollError extends Error {}

/** Wraps an error so {@link pollUntil} rethrows it at once instead of retrying. */
export function fatal(err: unknown): Error {
  return new FatalPollError("fatal", { cause: err });
}
