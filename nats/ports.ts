/**
 * Free loopback ports, chosen before the server starts.
 *
 * We pre-allocate (listen on port 0, read the port, close) instead of letting
 * nats-server pick with `-1`, because cluster routes and gateways must name
 * each other's ports up front and `restart()` must come back on the same
 * ports so clients and peers reconnect. The cost is a small race: another
 * process may grab the port between our close and the server's bind, so
 * callers retry with fresh ports via {@link retryOnPortClash}.
 */
import { createServer, type AddressInfo, type Server } from "node:net";

/** Loopback address every launched server binds to. */
export const HOST = "127.0.0.1";

function listenEphemeral(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen({ host: HOST, port: 0, exclusive: true }, () => resolve(srv));
  });
}

/**
 * Returns `count` distinct TCP ports on 127.0.0.1 that were free a moment
 * ago. All sockets stay open until every port is taken, so the kernel
 * cannot hand out the same port twice.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: count }, listenEphemeral));
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/** Returns one TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}

/** Thrown when a server could not bind one of its ports. */
export class PortInUseError extends Error {
  override name = "PortInUseError";
}

/**
 * Runs `attempt` up to `attempts` times while it fails with
 * {@link PortInUseError}; `attempt` must allocate fresh ports each time.
 */
export async function retryOnPortClash<T>(attempt: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof PortInUseError) || i >= attempts) throw err;
    }
  }
}
