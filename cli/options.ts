import type { Command } from "commander";
import ora from "ora";
import { connect, Identity, createLogger, type Bus, type ConnectOptions } from "../core/index.js";

/** Options every command takes. */
export interface CommonOptions {
  nats?: string;
  tenant?: string;
  seed?: string;
  json?: boolean;
  logLevel?: string;
}

/** Adds `--nats`, `--tenant`, `--seed`, `--json`, `--log-level` to a command. */
export function withCommon(cmd: Command): Command {
  return cmd
    .option("--nats <url>", "NATS server URL (env NATS_URL)", process.env.NATS_URL ?? "nats://127.0.0.1:4222")
    .option("--tenant <tenant>", "tenant (env AGENTBUS_TENANT)", process.env.AGENTBUS_TENANT ?? "default")
    .option("--seed <file>", "nkey seed file of the identity to act as (env AGENTBUS_SEED holds a seed)")
    .option("--json", "machine-readable JSON output")
    .option("--log-level <level>", "log level", "warn");
}

/** A command's result on stdout: one JSON line with `--json`, else the human line. */
export const print = (o: CommonOptions, json: unknown, human: string): void => void process.stdout.write(`${o.json ? JSON.stringify(json) : human}\n`);

/** Exit codes shared by every command. */
export const Exit = { ok: 0, taskFailed: 1, usage: 2, connection: 3 } as const;

/**
 * Connects with the common options (plus `extra` connect options, e.g.
 * `insecureAllowAll` for `agent run --insecure`); exits 3 with a clear
 * message when NATS is unreachable.
 */
export async function busFrom(o: CommonOptions, extra: Partial<ConnectOptions> = {}): Promise<Bus> {
  try {
    return await connect({
      servers: o.nats,
      tenant: o.tenant,
      identity: o.seed ? Identity.fromFile(o.seed) : undefined,
      name: "agentbus-cli",
      logger: createLogger({ level: o.logLevel ?? "warn" }, process.stderr as never),
      trustRoot: trustRootFromEnv(),
      ...extra,
    });
  } catch (err) {
    process.stderr.write(`agentbus: ${(err as Error).message}\n`);
    process.exit(Exit.connection);
  }
}

/**
 * The tenant's pinned trust root from `AGENTBUS_TRUST_ROOT` (admin ids,
 * comma separated), or undefined when it is not set.
 */
export function trustRootFromEnv(env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  const ids = (env.AGENTBUS_TRUST_ROOT ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  return ids.length > 0 ? ids : undefined;
}

/** Runs `work` on a bus connected with the common options, and always closes it. */
export async function withBus<T>(o: CommonOptions, work: (bus: Bus) => Promise<T>, extra?: Partial<ConnectOptions>): Promise<T> {
  const bus = await busFrom(o, extra);
  try {
    return await work(bus);
  } finally {
    await bus.close();
  }
}

/**
 * For commands that stream to stdout: a reader that went away (`agentbus tail
 * | head`) ends the command quietly instead of crashing it with EPIPE.
 */
export function quietOnClosedStdout(): void {
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(Exit.ok);
    throw err;
  });
}

/** Resolves on the first SIGINT or SIGTERM: long-running commands stop cleanly then. */
export function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => resolve());
  });
}

/** Parses CLI input: JSON when it parses as a JSON object or array, plain text otherwise. */
export function parseInput(text: string): string | Record<string, unknown> | unknown[] {
  const t = text.trim();
  if (t.startsWith("{") || t.startsWith("[")) {
    try {
      return JSON.parse(t) as Record<string, unknown> | unknown[];
    } catch {
      /* plain text that happens to start with a brace */
    }
  }
  return text;
}

/**
 * Human progress on stderr: an ora spinner while a command waits, only when
 * stderr is a terminal and `--json` is off (otherwise the spinner calls are
 * no-ops, so output stays clean for pipes and scripts). Results go through
 * `out()` to stdout: ora clears and redraws the spinner around whole lines,
 * and the spinner is taken down while a line is half written (streamed
 * chunks), which it would otherwise draw over.
 */
export interface Progress {
  /** The spinner's text. */
  text(text: string): void;
  /** Writes to stdout. */
  out(text: string): void;
  /** Removes the spinner for good. */
  stop(): void;
}

export function progress(o: CommonOptions, text: string): Progress {
  // A terminal that reports no width (some pseudo-terminals) would make ora
  // clear "infinitely many" lines: no spinner there.
  const tty = process.stderr.isTTY && (process.stderr.columns ?? 0) > 0;
  const spinner = !o.json && tty ? ora({ text, stream: process.stderr, discardStdin: false }).start() : undefined;
  let stopped = false;
  return {
    text: (t) => {
      if (spinner) spinner.text = t;
    },
    out: (t) => {
      if (!t) return;
      const lineOpen = !t.endsWith("\n");
      if (lineOpen && spinner?.isSpinning) spinner.stop();
      process.stdout.write(t);
      if (!lineOpen && spinner && !spinner.isSpinning && !stopped) spinner.start();
    },
    stop: () => {
      stopped = true;
      spinner?.stop();
    },
  };
}
