/**
 * The NATS address of a command: checked before anything connects. A URL
 * of another kind (`http://…`, the gateway's) is a usage error at once; a
 * server that does not greet as NATS does (`INFO …` as soon as a client
 * connects) is reported within seconds, not after the client library's
 * 20 s connect timeout.
 */
import { connect as tcpConnect } from "node:net";
import { AgentBusError } from "../core/index.js";

/** The NATS server of a command when nothing names one. */
export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

/** The port a NATS address without one means. */
const NATS_PORT = 4222;

/** How long a server has to connect and greet before a command gives up on it: a server still starting (JetStream recovering its store) accepts connections before it greets them. */
export const GREETING_TIMEOUT_MS = 10_000;

/** What the NATS client takes: `nats://host[:port]`, `tls://host[:port]`, `host[:port]`. */
export const ACCEPTED_FORMS = "nats://host:port, tls://host:port or host:port";

/**
 * A pattern for one NATS address (`agentbus up`'s configuration schema):
 * nats:// or tls:// URLs, or host[:port].
 */
export const NATS_ADDRESS_PATTERN = "^((nats|tls)://\\S+|[A-Za-z0-9_.-]+(:[0-9]{1,5})?|\\[[0-9A-Fa-f:.]+\\](:[0-9]{1,5})?)$";

/** One server of a `--nats` value. */
export interface NatsAddress {
  /** As given. */
  url: string;
  host: string;
  port: number;
}

/**
 * The servers of a `--nats` value (comma separated), each `nats://`,
 * `tls://` or `host[:port]`; `source` names where the value came from
 * (`--nats`, `NATS_URL`, a file) in the message.
 *
 * @throws {AgentBusError} `INVALID_INPUT` (exit 2) for anything else, such
 *   as an `http://` URL.
 */
export function natsAddresses(value: string, source: string): NatsAddress[] {
  const items = value.split(",").map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new AgentBusError("INVALID_INPUT", `${source} is empty: give ${ACCEPTED_FORMS}`);
  return items.map((item) => {
    const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(item)?.[1]?.toLowerCase();
    if (scheme !== undefined && scheme !== "nats" && scheme !== "tls") {
      const why = scheme === "http" || scheme === "https"
        ? ": that is an HTTP address (agentbus up's gateway serves HTTP; its NATS server has a nats:// URL, shown by agentbus up)"
        : scheme === "ws" || scheme === "wss" ? ": websocket URLs are not supported by this client" : "";
      throw new AgentBusError("INVALID_INPUT", `${source} ${item} is not a NATS server address${why}; give ${ACCEPTED_FORMS}`);
    }
    let url: URL;
    try {
      url = new URL(scheme ? item : `nats://${item}`);
    } catch {
      throw new AgentBusError("INVALID_INPUT", `${source} ${item} is not a NATS server address; give ${ACCEPTED_FORMS}`);
    }
    if (!url.hostname || (url.pathname !== "" && url.pathname !== "/") || url.search || url.hash) {
      throw new AgentBusError("INVALID_INPUT", `${source} ${item} is not a NATS server address (a host and port, no path); give ${ACCEPTED_FORMS}`);
    }
    return { url: item, host: url.hostname.replace(/^\[(.*)\]$/, "$1"), port: url.port ? Number(url.port) : NATS_PORT };
  });
}

/**
 * Resolves once one of `addresses` greets as a NATS server does (its first
 * bytes are `INFO `), within `timeoutMs`. Only the greeting is read: the
 * connection is closed before the client would authenticate.
 *
 * @throws {AgentBusError} `UNAVAILABLE` (exit 3) saying what each server
 *   did instead: refused the connection, said something else, or nothing.
 */
export async function expectNatsGreeting(addresses: NatsAddress[], where: string, timeoutMs = GREETING_TIMEOUT_MS): Promise<void> {
  const outcomes = await Promise.all(addresses.map((a) => greeting(a, timeoutMs).then((problem) => ({ a, problem }))));
  if (outcomes.some((o) => o.problem === undefined)) return;
  const why = outcomes.map((o) => (outcomes.length > 1 ? `${o.a.url}: ${o.problem}` : o.problem)).join("; ");
  throw new AgentBusError("UNAVAILABLE", `cannot connect to NATS at ${where}: ${why}`);
}

/** Undefined when the server greets as NATS in time, else what went wrong. */
function greeting(a: NatsAddress, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: a.host, port: a.port });
    let received = Buffer.alloc(0);
    let connected = false;
    const done = (problem: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => {
      done(connected
        ? `${a.host}:${a.port} accepted the connection but did not greet as a NATS server within ${timeoutMs / 1000} s (a NATS server sends INFO as soon as it accepts a client: is this another kind of server, such as an HTTP one?)`
        : `no answer from ${a.host}:${a.port} within ${timeoutMs / 1000} s`);
    }, timeoutMs);
    socket.once("connect", () => (connected = true));
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 5 && !received.includes(0x0a)) return;
      const first = received.subarray(0, 5).toString("latin1");
      if (first === "INFO ") return done(undefined);
      const line = received.toString("latin1").split(/\r?\n/)[0]!.slice(0, 60);
      done(`${a.host}:${a.port} is not a NATS server (it said ${JSON.stringify(line)})`);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      const what = err.code === "ECONNREFUSED" ? `connection refused by ${a.host}:${a.port} (is nats-server running there?)`
        : err.code === "ENOTFOUND" || err.code === "EAI_AGAIN" ? `unknown host ${a.host}`
        : `${a.host}:${a.port}: ${err.message}`;
      done(what);
    });
    socket.once("end", () => done(`${a.host}:${a.port} closed the connection without greeting as a NATS server`));
  });
}
