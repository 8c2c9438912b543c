/**
 * The system the A2A conformance kit runs against: the A2A bridge (JSON-RPC,
 * HTTP+JSON, and gRPC on a port of its own) in front of a bus whose only
 * agent is the kit's (test/fixtures/tck-agent.ts).
 *
 * The kit reads the card at the root of the host it is given
 * (`/.well-known/agent-card.json`, whatever the path), so the agent is the
 * tenant's only one: the gateway card lists its one skill, and the gateway
 * routes every message to it. Its own card and routes (`/a2a/tck`) serve
 * the same agent.
 *
 * Run alone (`npx tsx test/conformance/tck-sut.ts [caller...]`) it starts a
 * nats-server too and prints the URL to give the kit and the callers' API
 * keys (none: open mode), for runs by hand.
 */
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import Fastify from "fastify";
import { connect, createLogger, Identity, type Bus } from "../../core/index.js";
import { a2aBridge, hashApiKey } from "../../bridges/a2a/index.js";
import { freePort, startServer } from "../../nats/index.js";
import { tckAgent, TCK_AGENT } from "../fixtures/tck-agent.js";

/** The API key of caller `name`, as the kit presents it (`x-api-key`). */
export const tckApiKey = (name: string): string => `a2a-tck-${name}`;

export interface TckSut {
  /** The bridge's base URL (`http://localhost:<port>`). */
  url: string;
  /** The kit's `--sut-url`: the agent's JSON-RPC route, whose card is at `<sutUrl>/.well-known/agent-card.json`. */
  sutUrl: string;
  /** The gRPC binding's URL as its cards give it. */
  grpc: string;
  close(): Promise<void>;
}

export interface TckSutOptions {
  /**
   * Callers, each with its API key ({@link tckApiKey}): each sees its own
   * tasks only, so kit runs with different keys do not see each other's.
   * None: open mode (no authentication, one caller).
   */
  callers?: string[];
  tenant?: string;
}

/** Starts the bridge and the kit's agent on the NATS server at `servers`. */
export async function startTckSut(servers: string, options: TckSutOptions = {}): Promise<TckSut> {
  const tenant = options.tenant ?? "tck";
  const logger = createLogger({ level: "error" });
  const buses: Bus[] = [];
  const open = async (extra: Record<string, unknown> = {}) => {
    const bus = await connect({ servers, tenant, identity: Identity.generate(), presenceMaxAgeMs: 3000, drainTimeoutMs: 300, logger, ...extra });
    buses.push(bus);
    return bus;
  };
  const bridgeBus = await open();
  const agentBus = await open({ insecureAllowAll: true });
  await tckAgent(agentBus);
  for (let i = 0; i < 200 && bridgeBus.discover({ name: TCK_AGENT, online: true }).length === 0; i++) await new Promise((r) => setTimeout(r, 50));
  const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
  const callers = options.callers ?? [];
  const keyBus = callers.length > 0 ? await open() : undefined;
  const auth = keyBus ? { apiKeys: callers.map((name) => ({ name, sha256: hashApiKey(tckApiKey(name)), bus: keyBus })) } : { open: true as const };
  // Cards name the host as `localhost`, not 127.0.0.1: the kit reports loopback addresses in a card as a leak of internal URLs.
  const grpcPort = await freePort();
  await app.register(a2aBridge, {
    bus: bridgeBus,
    ...auth,
    // An absolute URL, as the spec's AgentInterface.url asks (the bridge's default is a bare `host:port`, which the kit cannot read).
    grpc: { port: grpcPort, publicAddress: `http://localhost:${grpcPort}` },
    // The kit's push tests run their webhook receiver on localhost:8888.
    push: { allowPrivateNetworks: true, backoffMs: 100, maxDeliver: 3 },
    keepAliveMs: 1_000,
    rateLimit: { max: 100_000, timeWindowMs: 60_000 },
  });
  const address = await app.listen({ port: 0, host: "127.0.0.1" });
  const front = await restAtRoot(Number(new URL(address).port));
  const url = `http://localhost:${(front.address() as AddressInfo).port}`;
  return {
    url,
    sutUrl: `${url}/a2a/${TCK_AGENT}`,
    grpc: `http://localhost:${grpcPort}`,
    close: async () => {
      front.closeAllConnections();
      await new Promise((resolve) => front.close(resolve));
      await app.close();
      await Promise.all(buses.map((b) => b.close()));
    },
  };
}

/** The HTTP+JSON operations' paths (A2A v1.0 §11), relative to an interface's URL. */
const REST_PATH = /^\/(message:send|message:stream|tasks(\/.*|\?.*)?|extendedAgentCard)$/;

/**
 * A plain HTTP front of the bridge on `port`: every request is passed on as
 * it is (Host included, so cards name the front), except the HTTP+JSON
 * operations at the root (`/message:send`, `/tasks/...`), which go to the
 * gateway's HTTP+JSON interface (`/a2a/rest/...`, as its card says).
 *
 * A workaround for the kit, not a feature of the bridge: the kit's REST
 * client at the vendored commit builds its request URLs with
 * `urljoin(base_url, "/message:send")`, which drops the interface URL's
 * path, so it can only reach an HTTP+JSON interface served at the root of
 * its host (its 1.0-dev line builds them relative to the interface URL).
 */
function restAtRoot(port: number): Promise<Server> {
  const front = createServer((req, res) => {
    const path = REST_PATH.test(req.url ?? "") ? `/a2a/rest${req.url}` : req.url;
    const upstream = request({ host: "127.0.0.1", port, method: req.method, path, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  });
  return new Promise((resolve) => front.listen(0, "127.0.0.1", () => resolve(front)));
}

// Alone: a nats-server of its own, then the bridge; stops on SIGINT/SIGTERM.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const nats = await startServer();
  const callers = process.argv.slice(2);
  const sut = await startTckSut(nats.url, { callers });
  process.stdout.write(`${JSON.stringify({ url: sut.url, sutUrl: sut.sutUrl, grpc: sut.grpc, keys: callers.map(tckApiKey) })}\n`);
  const stop = () => void sut.close().then(() => nats.cleanup()).then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
