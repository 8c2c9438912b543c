/**
 * CPU profile of a window of a bench/a2a child process, driven by the parent:
 * when BENCH_A2A_PROF_DIR is set, the first SIGUSR2 starts the V8 sampling
 * profiler (node:inspector, in-process), the next stops it, writes
 * `<dir>/<name>-<pid>.cpuprofile` and prints `PROFILED <path>` on stdout.
 * So the profile holds the measured load only, not start-up or warm-up.
 * Sampling interval: BENCH_CPU_PROF_INTERVAL_US (default 1000, as --cpu-prof).
 * Positions of code run through tsx are mapped back to the TypeScript
 * source (tsx's inline source maps), so file:line points at the .ts line.
 */
import { Session } from "node:inspector/promises";
import { findSourceMap } from "node:module";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

export function profileOnSignal(name: string): void {
  const dir = process.env.BENCH_A2A_PROF_DIR;
  if (!dir) return;
  let stop: (() => Promise<string>) | undefined;
  let busy = Promise.resolve();
  process.on("SIGUSR2", () => {
    busy = busy.then(async () => {
      if (!stop) {
        stop = await startProfiler(name, dir);
        return;
      }
      const path = await stop();
      stop = undefined;
      process.stdout.write(`PROFILED ${path}\n`);
    }).catch((err: unknown) => {
      process.stderr.write(`${name}: profiler: ${String(err)}\n`);
    });
  });
}

/**
 * Starts the V8 sampling profiler in this process now; the function it
 * returns stops it, writes `<dir>/<name>-<pid>.cpuprofile` (positions
 * mapped to the .ts lines) and returns the path. For a process that
 * profiles itself (bench/a2a/bindings.ts profiles its own load runs).
 */
export async function startProfiler(name: string, dir: string): Promise<() => Promise<string>> {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: Number(process.env.BENCH_CPU_PROF_INTERVAL_US ?? 1000) });
  await session.post("Profiler.start");
  return async () => {
    const { profile } = await session.post("Profiler.stop");
    session.disconnect();
    for (const node of profile.nodes) toSource(node.callFrame);
    const path = join(dir, `${name}-${process.pid}.cpuprofile`);
    writeFileSync(path, JSON.stringify(profile));
    return path;
  };
}

/** Maps a frame's 0-based line/column to the original source, where a source map says so. */
function toSource(frame: { url: string; lineNumber: number; columnNumber: number }): void {
  if (!frame.url.startsWith("file://") || frame.url.includes("/node_modules/") || frame.lineNumber < 0) return;
  try {
    const entry = findSourceMap(frame.url)?.findEntry(frame.lineNumber, frame.columnNumber);
    if (entry && "originalLine" in entry) {
      frame.lineNumber = entry.originalLine;
      frame.columnNumber = entry.originalColumn;
    }
  } catch {
    // no map: keep the generated position
  }
}
