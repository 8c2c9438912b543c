import { InvalidArgumentError, Option, type Command } from "commander";
import ora from "ora";
import { AgentBusError, connect, Identity, createLogger, isAgentBusError, type Bus, type ConnectOptions, type Logger } from "../core/index.js";
import { ACCEPTED_FORMS, DEFAULT_NATS_URL, expectNatsGreeting, natsAddresses, type NatsAddress } from "./nats-url.js";
import { dataDirOf, liveUpRecord, upRecordPath } from "./up-record.js";
import { readApiKeys, type ApiKeyConfig } from "../bridges/a2a/keys.js";

/** Options every command takes. */
export interface CommonOptions {
  nats?: string;
  tenant?: string;
  seed?: string;
  json?: boolean;
  logLevel?: string;
  dataDir?: string;
}

/** The log levels `--log-level` and `AGENTBUS_LOG_LEVEL` take. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** Adds `--nats`, `--tenant`, `--seed`, `--data-dir`, `--json`, `--log-level` to a command. */
export function withCommon(cmd: Command): Command {
  return cmd
    .option("--nats <url>", `NATS server: ${ACCEPTED_FORMS}, comma-separated for several (env NATS_URL; default: the server of the agentbus up running with the data dir, else ${DEFAULT_NATS_URL})`)
    .option("--tenant <tenant>", "tenant: lower-case letters, digits, - and _ (env AGENTBUS_TENANT; default: that agentbus up's tenant, else default)")
    .option("--seed <file>", "nkey seed file of the identity to act as (env AGENTBUS_SEED holds a seed; default: the demo user of that agentbus up --demo, else a new identity each run)")
    .option("--data-dir <dir>", "the data dir of the agentbus up to use: it records its NATS server there (up.json) (env AGENTBUS_DATA_DIR; default ./.agentbus)")
    .option("--json", "machine-readable JSON output")
    .addOption(new Option("--log-level <level>", "level of the library's logs, on stderr (env AGENTBUS_LOG_LEVEL; default warn)").choices(LOG_LEVELS));
}

/** An option parser for a whole number of at least `min` (anything else: a usage error, exit 2). */
export function wholeNumber(name: string, min = 0): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be a whole number${min > 0 ? ` of at least ${min}` : ""}.`);
    return n;
  };
}

/** A command's result on stdout: one JSON line with `--json`, else the human line. */
export const print = (o: CommonOptions, json: unknown, human: string): void => void process.stdout.write(`${o.json ? JSON.stringify(json) : human}\n`);

/** Exit codes shared by every command. */
export const Exit = { ok: 0, taskFailed: 1, usage: 2, connection: 3 } as const;

/** Errors that mean the bus could not be reached (exit 3), whatever their code. */
const connectionFailures = new WeakSet<object>();

/** Marks `err` as a failure to reach the bus: the command exits 3. */
export function connectionFailure<T>(err: T): T {
  if (typeof err === "object" && err !== null) connectionFailures.add(err);
  return err;
}

/** True for an error {@link connectionFailure} marked. */
export const isConnectionFailure = (err: unknown): boolean => typeof err === "object" && err !== null && connectionFailures.has(err);

/** Where a command connects, as whom, in which tenant. */
export interface BusTarget {
  addresses: NatsAddress[];
  /** The server(s) for messages, with where they came from when not named. */
  where: string;
  tenant: string;
  /** Undefined: `AGENTBUS_SEED`, else a new identity. */
  identity?: Identity;
  /** A federated up's region and regions, when its record names the server (else `AGENTBUS_REGION`, `AGENTBUS_REGIONS` apply). */
  federation?: { region?: string; regions: string[] };
}

const TENANT = /^[a-z0-9_-]+$/;

/**
 * Resolves the common options: the server (`--nats`, else `NATS_URL`, else
 * the record of the `agentbus up` running with the data dir, else
 * {@link DEFAULT_NATS_URL}), the tenant (`--tenant`, else
 * `AGENTBUS_TENANT`, else that up's, else `default`), the identity
 * (`--seed`, else `AGENTBUS_SEED`, else that up's demo user when it runs
 * the demo and the tenant is its own) and, for a federated up, its region
 * and regions.
 *
 * @throws {AgentBusError} `INVALID_INPUT` (exit 2) for a server address
 *   that is not a NATS one, a malformed tenant, or a seed file that is
 *   missing or holds no seed.
 */
export function targetOf(o: CommonOptions, env: NodeJS.ProcessEnv = process.env): BusTarget {
  const given = o.nats ?? (env.NATS_URL || undefined);
  const dataDir = dataDirOf(o, env);
  const record = given === undefined ? liveUpRecord(dataDir) : undefined;
  const url = given ?? record?.nats ?? DEFAULT_NATS_URL;
  const source = o.nats !== undefined ? "--nats" : given !== undefined ? "NATS_URL" : record ? `the server recorded in ${upRecordPath(dataDir)}` : "the default server";
  const addresses = natsAddresses(url, source);
  const tenant = o.tenant ?? (env.AGENTBUS_TENANT || undefined) ?? record?.tenant ?? "default";
  if (!TENANT.test(tenant)) {
    throw new AgentBusError("INVALID_INPUT", `${o.tenant !== undefined ? "--tenant" : "AGENTBUS_TENANT"} ${JSON.stringify(tenant)} is not a tenant name: lower-case letters, digits, - and _`);
  }
  const demo = o.seed === undefined && !env.AGENTBUS_SEED && record?.demo && tenant === record.tenant ? record.demo : undefined;
  const identity = o.seed !== undefined ? identityFromFile(o.seed, "--seed") : demo ? identityFromFile(demo.seed, `the demo user's seed (named in ${upRecordPath(dataDir)})`) : undefined;
  // A federated up: its region's node, federated, unless the environment says how to connect.
  const federation = record?.regions && !env.AGENTBUS_REGIONS && !env.AGENTBUS_HUB_DOMAIN ? { region: record.region, regions: record.regions } : undefined;
  return { addresses, where: record ? `${url} (agentbus up, pid ${record.pid}, recorded in ${upRecordPath(dataDir)})` : url, tenant, identity, ...(federation && { federation }) };
}

/**
 * The identity in a seed file; `what` names the option in the message.
 *
 * @throws {AgentBusError} `INVALID_INPUT` (exit 2) when the file cannot be
 *   read or holds no valid nkey user seed.
 */
export function identityFromFile(file: string, what: string): Identity {
  try {
    return Identity.fromFile(file);
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : isAgentBusError(err) ? err.message.replace(` in ${file}`, "") : `cannot read it (${(err as Error).message})`;
    throw new AgentBusError("INVALID_INPUT", `${what} ${file}: ${why}`, { cause: err });
  }
}

/**
 * The API keys file of `bridge a2a --keys` and `up --keys`.
 *
 * @throws {AgentBusError} `INVALID_INPUT` (exit 2) when it cannot be read,
 *   is not JSON or does not match the schema.
 */
export function apiKeysFrom(file: string, what = "--keys"): ApiKeyConfig[] {
  try {
    return readApiKeys(file);
  } catch (err) {
    if (isAgentBusError(err)) throw err;
    throw new AgentBusError("INVALID_INPUT", `${what} ${file}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message}`, { cause: err });
  }
}

/**
 * The commands' logger: JSON lines on stderr at `--log-level`, else
 * `AGENTBUS_LOG_LEVEL`, else `fallback`, else warn.
 *
 * @throws {AgentBusError} `INVALID_INPUT` (exit 2) when
 *   `AGENTBUS_LOG_LEVEL` is not a level (`--log-level` is checked when
 *   parsed).
 */
export function cliLogger(o: { logLevel?: string }, fallback?: string, env: NodeJS.ProcessEnv = process.env): Logger {
  const level = o.logLevel ?? (env.AGENTBUS_LOG_LEVEL || undefined) ?? fallback;
  if (level !== undefined && !(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new AgentBusError("INVALID_INPUT", `${o.logLevel !== undefined ? "--log-level" : "AGENTBUS_LOG_LEVEL"} ${JSON.stringify(level)} is not a log level: ${LOG_LEVELS.join(", ")}`);
  }
  return createLogger(level === undefined ? {} : { level });
}

/**
 * Connects with the common options (plus `extra` connect options, e.g.
 * `insecureAllowAll` for `agent run --insecure`). Usage errors (a bad
 * address, tenant or seed file) exit 2; a server that cannot be reached,
 * does not greet as NATS within seconds, or refuses the identity exits 3.
 */
export async function busFrom(o: CommonOptions, extra: Partial<ConnectOptions> = {}): Promise<Bus> {
  const target = targetOf(o);
  const logger = cliLogger(o);
  try {
    await expectNatsGreeting(target.addresses, target.where);
  } catch (err) {
    throw connectionFailure(err);
  }
  try {
    return await connect({
      servers: target.addresses.map((a) => a.url),
      tenant: target.tenant,
      identity: target.identity,
      ...target.federation,
      name: "agentbus-cli",
      logger,
      trustRoot: trustRootFromEnv(),
      ...extra,
    });
  } catch (err) {
    if (isAgentBusError(err, "INVALID_INPUT") || isAgentBusError(err, "MISUSE")) throw err;
    throw connectionFailure(err);
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
