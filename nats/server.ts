/**
 * Launching a single nats-server for tests and local development: it gets
 * its own temp store dir, loopback-only ports, a config file written next to
 * its data, and a readiness wait that proves a real client can use it.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findNatsServer, natsServerVersion } from "./binary.js";
import { mergeConfig, renderConfig } from "./config.js";
import { monitorJson } from "./monitor.js";
import { fatal, pollUntil } from "./poll.js";
import { HOST, PortInUseError, freePorts, retryOnPortClash } from "./ports.js";
import { ServerProcess } from "./process.js";
import { probe, type UserPass } from "./ready.js";

/** Options for {@link startServer}. */
export interface ServerOptions {
  /** Enable JetStream (default true). */
  jetstream?: boolean;
  /** Data + config directory. Default: a fresh `$TMPDIR/agentbus-nats-*`, removed by `cleanup()`. */
  storeDir?: string;
  /** Client port on 127.0.0.1. Default: a free port chosen now and kept across restarts. */
  port?: number;
  /** HTTP monitoring port on 127.0.0.1. Default: a free port (monitoring is always on; cluster checks use it). */
  httpPort?: number;
  /** `server_name` (required by JetStream clustering, optional otherwise). */
  name?: string;
  /** Extra config deep-merged over the generated one (cluster, gateway, accounts blocks...). */
  config?: Record<string, unknown>;
  /** Copy the server's log (stderr) to ours. */
  debug?: boolean;
  /**
   * The caller stops the server itself on SIGINT/SIGTERM (after draining its
   * clients): the launcher then does not pass those signals on, and the
   * server runs in its own process group, out of reach of a terminal's
   * Ctrl-C. It is still killed when this process exits.
   */
  stopsItself?: boolean;
  /** Path of the nats-server binary. Default: {@link findNatsServer}. */
  bin?: string;
  /** Credentials for readiness probes, needed when `config` turns on authorization. */
  auth?: UserPass;
  /** How long start/restart may take (default 15 s). */
  readyTimeoutMs?: number;
  /**
   * Require the JetStream API to answer before start resolves (default: same
   * as `jetstream`). Cluster nodes turn it off: a lone node cannot answer
   * until enough peers have started to elect a meta leader.
   */
  waitForJetStream?: boolean;
}

/** A running (or stopped) nats-server started by {@link startServer}. */
export interface NatsServer {
  /** Client URL, `nats://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  readonly httpPort: number;
  /** Monitoring base URL, `http://127.0.0.1:<httpPort>`. */
  readonly monitorUrl: string;
  /** `server_name`, if one was given. */
  readonly name: string | undefined;
  /** Credentials clients need, if any were given in options. */
  readonly auth: UserPass | undefined;
  /** Current OS pid (changes on restart). */
  readonly pid: number;
  readonly running: boolean;
  readonly storeDir: string;
  readonly configFile: string;
  /** The extra config in force (as {@link ServerOptions.config}, the last {@link reconfigure}'s). */
  readonly config: Record<string, unknown>;
  /** nats-server version, e.g. `"2.9.10"`. */
  readonly version: string;
  /** Last lines of the server's log, for diagnostics. */
  logTail(): string;
  /** Signals the server and waits for it to exit. `"SIGKILL"` simulates a crash. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts again with the same config, ports and store; resolves when ready. */
  restart(): Promise<void>;
  /**
   * Replaces the extra config (as {@link ServerOptions.config}) in the
   * config file and has the running server reload it (SIGHUP): accounts,
   * users and permissions change without dropping connections. Resolves
   * once the server reports the new load time.
   */
  reconfigure(config: Record<string, unknown>): Promise<void>;
  /** Stops if running, then removes the store dir if this launcher created it. */
  cleanup(): Promise<void>;
}

/** Thrown when a server exits or stays unready during start. */
export class NatsServerStartError extends Error {
  override name = "NatsServerStartError";
  constructor(message: string, readonly logTail: string) {
    super(`${message}\n--- nats-server log tail ---\n${logTail || "(empty)"}`);
  }
}

/** Inputs of {@link serverConfig}. */
export interface ServerConfigInput {
  port: number;
  httpPort: number;
  storeDir: string;
  jetstream: boolean;
  name?: string | undefined;
  config?: Record<string, unknown> | undefined;
}

/**
 * The config object {@link startServer} writes, as a pure function so the
 * example files in `nats/examples/` come from the same code.
 */
export function serverConfig(input: ServerConfigInput): Record<string, unknown> {
  const base: Record<string, unknown> = {
    server_name: input.name,
    listen: `${HOST}:${input.port}`,
    http: `${HOST}:${input.httpPort}`,
    // nats-server appends "jetstream/" to store_dir itself.
    jetstream: input.jetstream ? { store_dir: input.storeDir } : undefined,
  };
  return mergeConfig(base, input.config);
}

/** Renders a config object as a file with a short explanatory header. */
export function configFileText(config: Record<string, unknown>): string {
  return [
    "# nats-server config written by agentbus (nats/server.ts).",
    "# Run by hand with: nats-server -c <this file>",
    "",
    renderConfig(config),
  ].join("\n");
}

class LaunchedServer implements NatsServer {
  readonly url: string;
  readonly monitorUrl: string;
  private proc: ServerProcess | undefined;

  constructor(
    readonly port: number,
    readonly httpPort: number,
    readonly storeDir: string,
    readonly configFile: string,
    readonly version: string,
    private readonly bin: string,
    private readonly createdStoreDir: boolean,
    private readonly opts: ServerOptions,
  ) {
    this.url = `nats://${HOST}:${port}`;
    this.monitorUrl = `http://${HOST}:${httpPort}`;
  }

  get name(): string | undefined {
    return this.opts.name;
  }
  get config(): Record<string, unknown> {
    return this.opts.config ?? {};
  }

  get auth(): UserPass | undefined {
    return this.opts.auth;
  }
  get pid(): number {
    return this.proc?.pid ?? -1;
  }
  get running(): boolean {
    return this.proc?.running ?? false;
  }
  logTail(): string {
    return this.proc?.tail() ?? "";
  }

  /** Spawns the process and waits until a client can use it. */
  async start(): Promise<void> {
    const proc = new ServerProcess(this.bin, this.configFile, this.opts.debug, this.opts.stopsItself);
    this.proc = proc;
    const jetstream = this.opts.waitForJetStream ?? this.opts.jetstream ?? true;
    // Race each probe against the exit so a dead server fails fast instead
    // of after a probe's connect timeout (someone else may own the port).
    const death = proc.exited.then(() => this.exitError(proc));
    try {
      await pollUntil(
        async () => {
          const outcome = await Promise.race([
            probe({ url: this.url, auth: this.opts.auth, jetstream }).then(() => true),
            death,
          ]);
          if (outcome instanceof Error) throw fatal(outcome);
          return true;
        },
        { timeoutMs: this.opts.readyTimeoutMs ?? 15_000, what: `nats-server on ${this.url} to become ready` },
      );
    } catch (err) {
      await proc.stop("SIGKILL");
      if (err instanceof PortInUseError || err instanceof NatsServerStartError) throw err;
      throw new NatsServerStartError(`${(err as Error).message}; config ${this.configFile}`, proc.tail());
    }
  }

  private exitError(proc: ServerProcess): Error {
    const tail = proc.tail();
    const msg = `nats-server exited (${proc.exitStatus}) before becoming ready; config ${this.configFile}`;
    // A pre-allocated port taken by someone else: the caller may retry with new ports.
    if (/address already in use/.test(tail)) return new PortInUseError(`${msg}\n${tail}`);
    return new NatsServerStartError(msg, tail);
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await this.proc?.stop(signal);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async reconfigure(config: Record<string, unknown>): Promise<void> {
    this.opts.config = config;
    const loaded = async () => (await monitorJson<{ config_load_time?: string }>(this.monitorUrl, "/varz")).config_load_time;
    const before = await loaded();
    await writeFile(this.configFile, configFileText(serverConfig({
      port: this.port, httpPort: this.httpPort, storeDir: this.storeDir, jetstream: this.opts.jetstream ?? true, name: this.opts.name, config,
    })));
    process.kill(this.pid, "SIGHUP");
    await pollUntil(async () => ((await loaded()) !== before ? true : undefined), { timeoutMs: 10_000, what: `nats-server on ${this.url} to reload its config` }).catch((err: unknown) => {
      // The server says why it refused the new config in its log.
      throw new NatsServerStartError(String(err instanceof Error ? err.message : err), this.logTail());
    });
  }

  async cleanup(): Promise<void> {
    await this.stop();
    if (this.createdStoreDir) await rm(this.storeDir, { recursive: true, force: true });
  }
}

/**
 * Starts a nats-server on 127.0.0.1 and resolves once a client can connect
 * (and, with JetStream, once `$JS.API.INFO` answers). The generated config
 * is written to `<storeDir>/nats-server.conf`.
 *
 * @throws {NatsServerStartError} if the server dies or is not ready in time;
 *   the message includes the end of its log.
 */
export async function startServer(options: ServerOptions = {}): Promise<NatsServer> {
  const bin = options.bin ?? findNatsServer();
  const version = natsServerVersion(bin);
  const createdStoreDir = options.storeDir === undefined;
  const storeDir = options.storeDir ?? (await mkdtemp(join(tmpdir(), "agentbus-nats-")));
  await mkdir(storeDir, { recursive: true });
  const configFile = join(storeDir, "nats-server.conf");
  // Only ports we chose ourselves can be re-chosen after a clash.
  const pinned = options.port !== undefined || options.httpPort !== undefined;
  try {
    return await retryOnPortClash(async () => {
      const [autoPort, autoHttp] = await freePorts(2);
      const port = options.port ?? autoPort!;
      const httpPort = options.httpPort ?? autoHttp!;
      const config = serverConfig({
        port,
        httpPort,
        storeDir,
        jetstream: options.jetstream ?? true,
        name: options.name,
        config: options.config,
      });
      await writeFile(configFile, configFileText(config));
      const server = new LaunchedServer(port, httpPort, storeDir, configFile, version, bin, createdStoreDir, options);
      await server.start();
      return server;
    }, pinned ? 1 : 3);
  } catch (err) {
    if (createdStoreDir) await rm(storeDir, { recursive: true, force: true });
    throw err;
  }
}
