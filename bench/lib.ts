import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
/**
 * Shared helpers for the benchmarks: time-boxed op loops, percentiles,
 * rounding, and the one JSON line each benchmark prints on stdout.
 * Progress and diagnostics go to stderr only.
 */
import { performance } from "node:perf_hooks";

/** ops/s and µs/op of one measured operation. */
export interface Rate {
  opsPerSec: number;
  usPerOp: number;
  /** Operations actually run in the measured window. */
  ops: number;
}

/** Latency summary in ms. */
export interface Latency {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

export const now = (): number => performance.now();

/** Rounds to `digits` significant decimals (for readable JSON). */
export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Progress line on stderr. */
export function progress(...parts: unknown[]): void {
  process.stderr.write(`${parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" ")}\n`);
}

/** The benchmark's single result line on stdout. */
export function emit(result: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/**
 * Runs `fn` repeatedly for about `ms` milliseconds (after `warmupMs` of
 * warm-up) and returns the rate. Works for ops from ~50 ns to ~10 ms: the
 * clock is read once per batch and the batch grows until it lasts ≥ 5 ms,
 * so timer overhead stays negligible and slow ops still stop on time.
 */
export function timeFor(fn: () => unknown, ms = 1000, warmupMs = 200): Rate {
  let sink: unknown;
  const run = (budget: number): { ops: number; elapsed: number } => {
    let batch = 1;
    let ops = 0;
    const start = now();
    let elapsed = 0;
    while (elapsed < budget) {
      const t0 = now();
      for (let i = 0; i < batch; i++) sink = fn();
      const t1 = now();
      ops += batch;
      elapsed = t1 - start;
      if (t1 - t0 < 5 && batch < 1 << 20) batch *= 2;
    }
    return { ops, elapsed };
  };
  run(warmupMs);
  const { ops, elapsed } = run(ms);
  if (sink === Symbol.for("never")) progress("unreachable");
  return rateOf(ops, elapsed);
}

/** Rate from an op count and elapsed ms. */
export function rateOf(ops: number, elapsedMs: number): Rate {
  const opsPerSec = (ops * 1000) / elapsedMs;
  return { opsPerSec: round(opsPerSec, 1), usPerOp: round((elapsedMs * 1000) / ops, 3), ops };
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** p50/p90/p99/mean/min/max of latency samples in ms. */
export function summarize(samples: ArrayLike<number>): Latency {
  const sorted = Float64Array.from(samples as ArrayLike<number>).sort();
  let sum = 0;
  for (const s of sorted) sum += s;
  return {
    n: sorted.length,
    p50: round(percentile(sorted, 50), 4),
    p90: round(percentile(sorted, 90), 4),
    p99: round(percentile(sorted, 99), 4),
    mean: round(sum / sorted.length, 4),
    min: round(sorted[0] ?? NaN, 4),
    max: round(sorted[sorted.length - 1] ?? NaN, 4),
  };
}

/** `a / b`, rounded. */
export const ratio = (a: number, b: number, digits = 3): number => round(a / b, digits);

const CLK_TCK = 100; // Linux USER_HZ; /proc/<pid>/stat reports ticks

/** utime+stime of a process (all threads) in µs, from /proc; NaN where unavailable. */
export function procCpuUs(pid: number | undefined): number {
  if (!pid || pid < 0) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/**
 * Runs `cleanup` once on SIGINT/SIGTERM, then exits 130. `on`, not `once`:
 * tsx relays the terminal's SIGINT, so a second one may arrive while
 * cleaning up and must not kill us before the children are stopped.
 */
export function cleanupOnSignals(cleanup: () => Promise<unknown>, isCleaning: () => boolean): void {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      if (isCleaning()) return;
      progress(`${sig}: cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });
  }
}

/** Waits for `p` at most `ms` (a child that will not stop must not hang the run); its error is ignored. */
export function bounded(p: Promise<unknown> | undefined, ms = 5000): Promise<unknown> {
  return Promise.race([p?.catch(() => {}), new Promise((r) => setTimeout(r, ms).unref())]);
}

/**
 * Runs a benchmark's `main`, then `stop` once, whatever happens: after
 * success, after a failure (exit code 1), or on SIGINT/SIGTERM (exit 130;
 * the run's own failure is then reported as an interruption, without a stack).
 */
export async function runBench(main: () => Promise<void>, stop: () => Promise<void>): Promise<void> {
  let stopping: Promise<void> | undefined;
  const cleanup = () => (stopping ??= stop());
  cleanupOnSignals(cleanup, () => stopping !== undefined);
  try {
    await main();
  } catch (err) {
    progress(stopping ? `interrupted: ${(err as Error)?.message ?? String(err)}` : `bench failed: ${(err as Error)?.stack ?? String(err)}`);
    process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

/**
 * For benchmark child processes: `close` and exit on SIGTERM/SIGINT, or when
 * the parent (which holds our stdin) goes away, even by crash.
 */
export function exitWithParent(close: () => Promise<unknown>): void {
  let closing = false;
  const shutdown = async (): Promise<void> => {
    if (closing) return;
    closing = true;
    // The server may already be gone (parent crashed): don't wait on a drain forever.
    setTimeout(() => process.exit(0), 3000).unref();
    await close().catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown());
  process.on("SIGINT", () => void shutdown());
  process.stdin.on("end", () => void shutdown());
  process.stdin.on("close", () => void shutdown());
  process.stdin.resume();
}

/** Stops a benchmark child: ends its stdin, sends `signal`, SIGKILL after 5 s; resolves once it exited. */
export async function stopChild(proc: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, "exit");
  proc.stdin?.end();
  proc.kill(signal);
  const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * CPU accounting over named processes: `sample()` reads each one's CPU µs
 * (`"self"` is this process), `add` accumulates a before/after pair, `per`
 * divides by an operation count and adds the total.
 */
export function cpuMeter<K extends string>(sources: () => Record<K, number | "self" | undefined>) {
  const sample = (): Record<K, number> => {
    const out = {} as Record<K, number>;
    for (const [k, pid] of Object.entries(sources()) as Array<[K, number | "self" | undefined]>) {
      if (pid === "self") {
        const u = process.cpuUsage();
        out[k] = u.user + u.system;
      } else out[k] = procCpuUs(pid);
    }
    return out;
  };
  const zero = (): Record<K, number> => Object.fromEntries(Object.keys(sources()).map((k) => [k, 0])) as Record<K, number>;
  const add = (acc: Record<K, number>, before: Record<K, number>, after: Record<K, number>): void => {
    for (const k of Object.keys(acc) as K[]) acc[k] += after[k] - before[k];
  };
  const per = (acc: Record<K, number>, n: number): Record<K, number> & { total: number } => {
    const out = {} as Record<K, number> & { total: number };
    let total = 0;
    for (const k of Object.keys(acc) as K[]) {
      (out as Record<K, number>)[k] = round(acc[k] / n, 1);
      total += acc[k];
    }
    out.total = round(total / n, 1);
    return out;
  };
  return { sample, zero, add, per };
}
