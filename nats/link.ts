/**
 * A TCP relay between two local ports whose traffic can be cut and
 * restored: the link an edge site's leaf node keeps to its hub, made to go
 * down on purpose in tests and demos (a server stopped would take the
 * edge's local service down with it).
 */
import { connect as tcpConnect, createServer, type Server, type Socket } from "node:net";
import { HOST, freePort } from "./ports.js";

/** A relay started by {@link startLink}. */
export interface Link {
  /** Where to connect to reach the target through the relay: `127.0.0.1:<port>`. */
  readonly port: number;
  /** Whether traffic flows. */
  readonly up: boolean;
  /** Drops every connection through the relay and refuses new ones until {@link restore}. */
  cut(): void;
  /** Lets connections through again. */
  restore(): void;
  close(): Promise<void>;
}

/** Relays `127.0.0.1:<a free port>` to `127.0.0.1:<targetPort>`. */
export async function startLink(targetPort: number): Promise<Link> {
  const port = await freePort();
  const sockets = new Set<Socket>();
  let up = true;
  const server: Server = createServer((client) => {
    if (!up) return void client.destroy();
    const upstream = tcpConnect(targetPort, HOST);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, HOST, () => resolve());
  });
  return {
    port,
    get up() {
      return up;
    },
    cut() {
      up = false;
      for (const s of sockets) s.destroy();
    },
    restore() {
      up = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
