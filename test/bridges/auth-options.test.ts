import Fastify from "fastify";
import { describe, expect, it } from "vitest";
import { a2aBridge, hashApiKey } from "../../bridges/a2a/index.js";
import { mcpHttp } from "../../bridges/mcp/index.js";
import { httpEdge } from "../../bridges/http/index.js";
import { monitor } from "../../bridges/monitor/index.js";
import { useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

describe("every HTTP bridge needs exactly one of apiKeys and open", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("refuses neither and both, at registration", async () => {
    const bus = await open({ tenant: "authopts" });
    const keys = [{ name: "k", sha256: hashApiKey("secret"), bus }];
    for (const plugin of [a2aBridge, mcpHttp, monitor] as const) {
      for (const options of [{ bus }, { bus, open: true, apiKeys: keys }]) {
        const app = Fastify();
        await expect(app.register(plugin as never, options as never).ready(), `${plugin.name} ${JSON.stringify(Object.keys(options))}`).rejects.toThrow(/either/);
        await app.close().catch(() => {});
      }
    }
  });

  it("behind an app's HTTP edge a bridge takes its callers from the edge, and refuses its own auth options", async () => {
    const bus = await open({ tenant: "authopts" });
    const keys = [{ name: "k", sha256: hashApiKey("secret"), bus }];
    for (const plugin of [a2aBridge, mcpHttp, monitor] as const) {
      const app = Fastify();
      await app.register(httpEdge, { bus, apiKeys: keys });
      await expect(app.register(plugin as never, { bus, open: true } as never).ready(), plugin.name).rejects.toThrow(/HTTP edge authenticates/);
      await app.close().catch(() => {});
      const fine = Fastify();
      await fine.register(httpEdge, { bus, apiKeys: keys });
      await fine.register(plugin as never, { bus } as never);
      await fine.ready();
      await fine.close();
    }
  });
});
