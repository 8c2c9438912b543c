import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requestFixApplied, writeFixApplied } from "../../core/infra/natsfix.js";
import { useNatsServer } from "../helpers/nats.js";

// nats-core's own errors module (the one its requests build errors from), reached by path.
const require = createRequire(import.meta.url);
const errors = require(join(dirname(require.resolve("@nats-io/nats-core")), "errors.js")) as { RequestError: new (...a: unknown[]) => Error };

describe("nats-core request fix", () => {
  const nats = useNatsServer();
  let nc: NatsConnection;
  let built: string[] = [];
  const Original = errors.RequestError;

  beforeAll(async () => {
    nc = await connect({ servers: nats.server.url, noAsyncTraces: true });
    nc.subscribe("echo", { callback: (_e, m) => void m.respond(m.data) });
    // Count the RequestErrors nats-core builds.
    errors.RequestError = class extends Original {
      constructor(...a: unknown[]) {
        super(...a);
        built.push(this.message);
      }
    };
  });
  afterAll(async () => {
    errors.RequestError = Original;
    await nc?.close();
  });

  it("answered requests build no error; failures are reported as before", async () => {
    expect(requestFixApplied).toBe(true);
    built = [];
    for (let i = 0; i < 50; i++) expect(new TextDecoder().decode((await nc.request("echo", `m${i}`)).data)).toBe(`m${i}`);
    expect(built).toEqual([]);

    const noResponders = (await nc.request("nobody.here", "x").then(() => undefined, (e: unknown) => e)) as { isNoResponders(): boolean };
    expect(noResponders.isNoResponders()).toBe(true);
    nc.subscribe("silent", { callback: () => {} });
    await expect(nc.request("silent", "x", { timeout: 100 })).rejects.toMatchObject({ name: "TimeoutError" });
  });

  it("what one event-loop turn publishes goes out in one socket write, in order", async () => {
    expect(writeFixApplied).toBe(true);
    const got: string[] = [];
    const sub = nc.subscribe("burst", { callback: (_e, m) => void got.push(new TextDecoder().decode(m.data)) });
    await nc.flush();
    const transport = (nc as unknown as { protocol: { transport: { send(d: Uint8Array): void } } }).protocol.transport;
    const send = transport.send.bind(transport);
    let writes = 0;
    transport.send = (d) => {
      writes++;
      send(d);
    };
    try {
      // 200 publishes from promise chains of one turn, at 10 microtask depths: one write, not one per depth.
      await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          for (let k = 0; k < Math.floor(i / 20); k++) await null;
          nc.publish("burst", `m${i}`);
        }),
      );
      await new Promise((r) => setImmediate(r));
      expect(writes).toBe(1);
      await nc.flush();
      expect(got).toEqual(Array.from({ length: 200 }, (_, i) => `m${i}`));
    } finally {
      transport.send = send;
      sub.unsubscribe();
    }
  });
});
