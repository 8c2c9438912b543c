import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { PortInUseError, freePort, freePorts } from "../../nats/index.js";
import { retryOnPortClash } from "../../nats/ports.js";

describe("ports", () => {
  it("hands out distinct loopback ports that can be bound", async () => {
    const ports = await freePorts(5);
    expect(new Set(ports).size).toBe(5);
    const port = await freePort();
    const srv = createServer();
    await new Promise<void>((resolve, reject) => {
      srv.once("error", reject);
      srv.listen(port, "127.0.0.1", resolve);
    });
    srv.close();
  });

  it("retries only port clashes, and only so often", async () => {
    let calls = 0;
    await expect(
      retryOnPortClash(async () => {
        calls++;
        if (calls < 3) throw new PortInUseError("taken");
        return "ok";
      }),
    ).resolves.toBe("ok");
    expect(calls).toBe(3);

    calls = 0;
    await expect(retryOnPortClash(async () => (calls++, Promise.reject(new PortInUseError("x"))), 2)).rejects.toThrow(
      PortInUseError,
    );
    expect(calls).toBe(2);

    calls = 0;
    await expect(retryOnPortClash(async () => (calls++, Promise.reject(new Error("other"))))).rejects.toThrow("other");
    expect(calls).toBe(1);
  });
});
