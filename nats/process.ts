/**
 * One running nats-server OS process: spawning, keeping a tail of its log,
 * stopping it, and making sure it never outlives us.
 */
import { spawn, type ChildProcess } from "node:child_process";

const TAIL_LINES = 40;

// Every child still running, so none outlives us:
// - on "exit" (normal end, process.exit) they get SIGKILL: exit handlers must
//   be synchronous, so there is no waiting for a graceful stop anyway;
// - on SIGTERM/SIGINT (vitest stops its workers with SIGTERM, which skips
//   "exit" handlers) they get SIGTERM, a graceful stop they finish on their
//   own, and then we die of the same signal as if we had not listened.
// A Ctrl-C in a terminal reaches them directly too: they share our process group.
// A server whose owner stops it itself on signals (`agentbus up` drains its
// clients first) is left out of the signal rule and runs in its own process
// group; the "exit" rule still applies to it.
const live = new Set<ChildProcess>();
const ownerStopped = new WeakSet<ChildProcess>();
let reaperInstalled = false;

function killAll(signal: NodeJS.Signals, spareOwnerStopped = false): void {
  for (const child of live) if (!(spareOwnerStopped && ownerStopped.has(child))) child.kill(signal);
}

function onSignal(signal: NodeJS.Signals): void {
  killAll("SIGTERM", true);
  // Someone else listening decides how the process ends; otherwise restore
  // the default action and re-raise so the exit status stays honest.
  if (process.listenerCount(signal) === 1) {
    process.removeListener(signal, onSignal);
    process.kill(process.pid, signal);
  }
}

function installReaper(): void {
  if (reaperInstalled) return;
  reaperInstalled = true;
  process.on("exit", () => killAll("SIGKILL"));
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, onSignal);
}

/** A spawned nats-server with its recent log lines. */
export class ServerProcess {
  readonly child: ChildProcess;
  /** Resolves with the exit code (or signal name) once the process is gone. */
  readonly exited: Promise<number | string>;
  private readonly lines: string[] = [];
  private exitInfo: number | string | undefined;

  /**
   * Starts `bin -c configFile`. stderr (where nats-server logs) is always
   * read, because an unread pipe eventually blocks the server; with `debug`
   * it is also copied to our stderr. With `stopsItself`, our SIGTERM/SIGINT
   * does not reach it: the owner stops it after draining its clients.
   */
  constructor(bin: string, configFile: string, debug = false, stopsItself = false) {
    installReaper();
    this.child = spawn(bin, ["-c", configFile], { stdio: ["ignore", "ignore", "pipe"], detached: stopsItself });
    live.add(this.child);
    if (stopsItself) ownerStopped.add(this.child);
    let partial = "";
    this.child.stderr?.setEncoding("utf8");
    this.child.stderr?.on("data", (chunk: string) => {
      if (debug) process.stderr.write(chunk);
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      this.lines.push(...parts);
      if (this.lines.length > TAIL_LINES) this.lines.splice(0, this.lines.length - TAIL_LINES);
    });
    this.exited = new Promise((resolve) => {
      // "close" (not "exit") so the last stderr lines are in the tail.
      this.child.once("close", (code, signal) => {
        live.delete(this.child);
        if (partial) this.lines.push(partial);
        this.exitInfo ??= code ?? signal ?? "unknown";
        resolve(this.exitInfo);
      });
      this.child.once("error", (err) => {
        live.delete(this.child);
        this.lines.push(`spawn error: ${err.message}`);
        this.exitInfo ??= "spawn-error";
        resolve(this.exitInfo);
      });
    });
  }

  /** OS process id. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** True until the process has exited. */
  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** How the process ended, once it has. */
  get exitStatus(): number | string | undefined {
    return this.exitInfo;
  }

  /** The last log lines, for error messages. */
  tail(): string {
    return this.lines.join("\n");
  }

  /**
   * Sends `signal` and waits for the exit. A graceful stop that hangs longer
   * than `graceMs` is finished with SIGKILL, so `stop()` always returns.
   */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}
