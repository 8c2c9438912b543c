import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterEach, describe, expect, it } from "vitest";
import { NatsServerStartError, PortInUseError, startServer, type NatsServer } from "../../nats/index.js";
import { useNatsServer } from "../helpers/nats.js";

/** True while a process with this pid exists. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("startServer (shared per file)", () => {
  const nats = useNatsServer();

  it("listens on loopback with a readable config in its store dir", async () => {
    const { server } = nats;
    expect(server.url).toBe(`nats://127.0.0.1:${server.port}`);
    expect(server.port).not.toBe(4222);
    expect(server.running).toBe(true);
    expect(alive(server.pid)).toBe(true);
    expect(server.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(server.configFile).toBe(join(server.storeDir, "nats-server.conf"));
    const conf = await readFile(server.configFile, "utf8");
    expect(conf).toContain(`listen: "127.0.0.1:${server.port}"`);
    expect(conf).toContain(`store_dir: "${server.storeDir}"`);
  });

  it("serves core NATS and JetStream", async () => {
    const nc = await connect({ servers: nats.server.url });
    try {
      const sub = nc.subscribe("svc.echo");
      void (async () => {
        for await (const m of sub) m.respond(m.data);
      })();
      expect((await nc.request("svc.echo", "hi", { timeout: 2_000 })).string()).toBe("hi");

      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "SMOKE", subjects: ["smoke.>"] });
      const ack = await jsm.jetstream().publish("smoke.one", "payload");
      expect(ack.seq).toBe(1);
    } finally {
      await nc.close();
    }
  });

  it("answers the monitoring endpoint on its http port", async () => {
    const res = await fetch(`${nats.server.monitorUrl}/varz`);
    expect(((await res.json()) as { port: number }).port).toBe(nats.server.port);
  });
});

describe("startServer lifecycle", () => {
  const started: NatsServer[] = [];
  const connections: NatsConnection[] = [];
  afterEach(async () => {
    await Promise.all(connections.splice(0).map((nc) => nc.close()));
    await Promise.all(started.splice(0).map((s) => s.cleanup()));
  });

  it("comes back on the same port after SIGKILL with JetStream data intact and clients reconnected", async () => {
    const server = await startServer();
    started.push(server);
    const nc = await connect({ servers: server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
    connections.push(nc);
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "DURABLE", subjects: ["durable.>"] });
    await jsm.jetstream().publish("durable.x", "survives");

    const reconnected = (async () => {
      for await (const s of nc.status()) if (s.type === "reconnect") return s;
      return undefined;
    })();
    const firstPid = server.pid;
    await server.stop("SIGKILL");
    expect(server.running).toBe(false);
    expect(alive(firstPid)).toBe(false);

    await server.restart();
    expect(server.running).toBe(true);
    expect(server.pid).not.toBe(firstPid);
    expect(server.url).toBe(`nats://127.0.0.1:${server.port}`);
    await expect(reconnected).resolves.toMatchObject({ type: "reconnect" });

    const msg = await jsm.streams.getMessage("DURABLE", { seq: 1 });
    expect(msg?.string()).toBe("survives");
    expect((await jsm.jetstream().publish("durable.y", "after")).seq).toBe(2);
  }, 30_000);

  it("cleanup stops the process and removes the store dir it created", async () => {
    const server = await startServer({ jetstream: true });
    const { pid, storeDir } = server;
    expect(existsSync(join(storeDir, "jetstream"))).toBe(true);
    await server.cleanup();
    expect(alive(pid)).toBe(false);
    expect(existsSync(storeDir)).toBe(false);
    await server.cleanup(); // idempotent
  });

  it("keeps a store dir the caller provided", async () => {
    const storeDir = await mkdtemp(join(tmpdir(), "agentbus-nats-own-"));
    try {
      const server = await startServer({ storeDir, jetstream: false });
      await server.cleanup();
      expect(existsSync(join(storeDir, "nats-server.conf"))).toBe(true);
    } finally {
      await rm(storeDir, { recursive: true, force: true });
    }
  });

  it("runs without JetStream when asked", async () => {
    const server = await startServer({ jetstream: false });
    started.push(server);
    expect(await readFile(server.configFile, "utf8")).not.toContain("jetstream");
    const nc = await connect({ servers: server.url });
    connections.push(nc);
    await expect(nc.request("$JS.API.INFO", undefined, { timeout: 1_000 })).rejects.toThrow();
  });

  it("reports a server that dies on start with the end of its log", async () => {
    const attempt = startServer({ config: { no_such_option: 1 } });
    await expect(attempt).rejects.toThrow(NatsServerStartError);
    await expect(attempt).rejects.toThrow(/exited \(1\) before becoming ready[\s\S]*unknown field "no_such_option"/);
  });

  it("fails with PortInUseError when a pinned port is taken", async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const port = (blocker.address() as { port: number }).port;
    try {
      await expect(startServer({ port })).rejects.toThrow(PortInUseError);
    } finally {
      blocker.close();
    }
  });
});
