import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach } from "vitest";

/**
 * Real HTTP servers on loopback for one test, closed (connections cut)
 * after it. `listen(handler, port?)` resolves with the base URL and port.
 */
export function useHttpServers() {
  const servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(
      servers.splice(0).map(
        (s) =>
          new Promise<void>((resolve) => {
            s.closeAllConnections();
            s.close(() => resolve());
          }),
      ),
    );
  });
  return async (handler: (req: IncomingMessage, res: ServerResponse) => void, port = 0): Promise<{ url: string; port: number }> => {
    const server = createServer(handler);
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    servers.push(server);
    const bound = (server.address() as AddressInfo).port;
    return { url: `http://127.0.0.1:${bound}`, port: bound };
  };
}
