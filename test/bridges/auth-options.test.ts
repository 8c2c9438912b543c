import Fastify from "fastify";
import { describe, expect, it } from "vitest";
import { a2aBridge, hashApiKey } from "../../bridges/a2a/index.js";
import { mcpHttp } from "../../bridges/mcp/index.js";
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
});
