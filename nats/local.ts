/**
 * Which NATS `agentbus up` runs on: the one the user names, else a JetStream
 * server already on the default local address, else one it starts itself
 * (embedded: a child nats-server with its data in a directory of the
 * project, stopped on exit).
 */
import { probe } from "./ready.js";
import { startServer, type NatsServer } from "./server.js";

/** Options of {@link chooseNats}. */
export interface ChooseNatsOptions {
  /** A server the user named (`--nats`, `NATS_URL`, config): used as is, never replaced. */
  url?: string;
  /** Where a local server is looked for first (default `nats://127.0.0.1:4222`). */
  localUrl?: string;
  /** Data directory of an embedded server (JetStream store and config). */
  dataDir: string;
  /** Client port of an embedded server (default: a free port). */
  port?: number;
}

/** The chosen server. `stop()` stops it only when it was started here. */
export interface ChosenNats {
  url: string;
  source: "given" | "local" | "embedded";
  /** The embedded server, when one was started. */
  server?: NatsServer;
  stop(): Promise<void>;
}

export const DEFAULT_LOCAL_URL = "nats://127.0.0.1:4222";

/**
 * A given URL must answer with JetStream (the bus needs it): a wrong URL is
 * an error, not a reason to start something else. Without one, a local
 * server is used when it has JetStream; otherwise an embedded one starts.
 */
export async function chooseNats(options: ChooseNatsOptions): Promise<ChosenNats> {
  const none = async () => {};
  if (options.url) {
    await probe({ url: options.url, jetstream: true, timeoutMs: 3_000 }).catch((cause: Error) => {
      throw new Error(`NATS at ${options.url} is not usable (${cause.message}); agentbus needs a reachable server with JetStream`, { cause });
    });
    return { url: options.url, source: "given", stop: none };
  }
  const localUrl = options.localUrl ?? DEFAULT_LOCAL_URL;
  const local = await probe({ url: localUrl, jetstream: true, timeoutMs: 1_000 }).then(
    () => true,
    () => false,
  );
  if (local) return { url: localUrl, source: "local", stop: none };
  const server = await startServer({ storeDir: options.dataDir, port: options.port, stopsItself: true });
  return { url: server.url, source: "embedded", server, stop: () => server.stop("SIGTERM") };
}
