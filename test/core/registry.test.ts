import { createServer, connect as tcpConnect, type Socket } from "node:net";
import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import type { AgentEvent, Bus } from "../../core/index.js";
import { useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

const nats = useNatsServer();
const bus = useBuses(() => nats.server.url, { insecureAllowAll: true });

let n = 0;
const tenant = () => `reg${process.pid}-${++n}`;

/** Consumers on a bucket's stream with a subscriber: one per running watch of it (a stopped watch's consumer lingers unbound until it expires). */
async function watchesOf(b: Bus, bucket: "agents" | "presence"): Promise<number> {
  const jsm = await jetstreamManager(b.nc);
  let bound = 0;
  for await (const c of jsm.consumers.list(`KV_${b.subjects.bucket(bucket)}`)) if (c.push_bound) bound++;
  return bound;
}

async function until(done: () => boolean, what: string, limitMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!done()) {
    if (Date.now() - t0 > limitMs) throw new Error(`not seen in ${limitMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function runAgent(b: Bus, cap: string) {
  return b.agent({ name: cap, skills: [{ id: cap }] }, { [cap]: (ctx) => ctx.text }, { tasks: false });
}

describe("registry views shared by the buses of one process", () => {
  it("buses on the same buckets keep one watch per bucket, and each sees every agent", async () => {
    const t = tenant();
    const buses = await Promise.all([0, 1, 2, 3].map(() => bus({ tenant: t })));
    expect(await watchesOf(buses[0]!, "agents")).toBe(1);
    expect(await watchesOf(buses[0]!, "presence")).toBe(1);
    await runAgent(buses[1]!, "one");
    await runAgent(buses[2]!, "two");
    for (const b of buses) await until(() => b.discover({ online: true }).length === 2, "both agents online");

    // Another tenant's buckets: its own view, which sees only its own agents.
    const other = await bus({ tenant: tenant() });
    await runAgent(other, "three");
    await until(() => other.discover({ online: true }).length === 1, "the other tenant's agent");
    expect(buses[3]!.discover({ capability: "three" })).toEqual([]);
    expect(await watchesOf(other, "agents")).toBe(1);
  });

  it("when the bus the view runs on closes, the view moves to another bus: listeners miss nothing", async () => {
    const t = tenant();
    const home = await bus({ tenant: t });
    const [a, b] = await Promise.all([bus({ tenant: t }), bus({ tenant: t })]);
    const seen: AgentEvent[] = [];
    b.onAgent((e) => seen.push(e));
    const dropped: AgentEvent[] = [];
    home.onAgent((e) => dropped.push(e));

    await home.close();
    await runAgent(a, "after-home-closed");
    await until(() => b.discover({ capability: "after-home-closed", online: true }).length === 1, "the new agent, through the moved view");
    await until(() => seen.some((e) => e.type === "up" && e.agent.capabilities.includes("after-home-closed")), "an up event");
    // The closed bus's listener was dropped with it; the view watches from one connection still.
    expect(dropped).toEqual([]);
    expect(await watchesOf(b, "agents")).toBe(1);
  });

  it("a view whose connection is closed under it moves to another member", async () => {
    const t = tenant();
    const home = await bus({ tenant: t });
    const other = await bus({ tenant: t });
    await home.nc.close();
    await runAgent(other, "after-connection-lost");
    await until(() => other.discover({ capability: "after-connection-lost", online: true }).length === 1, "the agent, through the moved view");
    expect(await watchesOf(other, "agents")).toBe(1);
  });

  it("a view whose connection loses its server moves to another bus's connection", async () => {
    const t = tenant();
    // A proxy in front of the server that the test cuts: the connection behind it then reconnects in vain.
    const { hostname, port } = new URL(nats.server.url);
    const sockets = new Set<Socket>();
    const proxy = createServer((client) => {
      const upstream = tcpConnect(Number(port), hostname);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on("error", () => {});
        s.on("close", () => sockets.delete(s));
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const proxied = `nats://127.0.0.1:${(proxy.address() as { port: number }).port}`;
    try {
      const home = await bus({ tenant: t, servers: proxied });
      const other = await bus({ tenant: t });
      expect(home.discover()).toEqual([]);
      proxy.close();
      for (const s of sockets) s.destroy();
      await runAgent(other, "after-cut");
      await until(() => other.discover({ capability: "after-cut", online: true }).length === 1, "the agent, through the view moved off the cut connection");
    } finally {
      proxy.close();
      for (const s of sockets) s.destroy();
    }
  });

  it("a view left with no open connection is taken over by the next bus that joins it", async () => {
    const t = tenant();
    const lone = await bus({ tenant: t });
    await lone.nc.close(); // its bus is not closed: the view keeps its member, without a connection to run on
    const next = await bus({ tenant: t });
    await runAgent(next, "after-takeover");
    await until(() => next.discover({ capability: "after-takeover", online: true }).length === 1, "the agent, through the view moved to the new bus");
    expect(await watchesOf(next, "agents")).toBe(1);
  });

  it("the last bus to leave stops the view; the next bus starts a fresh one", async () => {
    const t = tenant();
    const first = await bus({ tenant: t });
    await runAgent(first, "kept");
    await first.close();
    const probe = await bus({ tenant: t });
    // The closed view's watches are gone: only the new bus's remain.
    expect(await watchesOf(probe, "agents")).toBe(1);
    expect(probe.discover({ capability: "kept" }).map((a) => a.name)).toEqual(["kept"]);
  });
});

describe("an agent replaced while it runs", () => {
  it("a caller that reads the new card first and calls a new capability on the old instance is served", async () => {
    const t = tenant();
    const [host, caller] = await Promise.all([bus({ tenant: t }), bus({ tenant: t })]);
    const first = await runAgent(host, "one");
    await until(() => caller.discover({ capability: "one", online: true }).length === 1, "the first agent online");
    const answers: Array<Promise<unknown>> = [];
    // Called from the registry event, the old instance is the only one the caller knows.
    const off = caller.onAgent((e) => {
      if (e.agent.card.skills.some((s) => s.id === "two") && answers.length === 0) {
        answers.push(caller.call("two", "hello").then((m) => m.parts, (err: unknown) => err));
      }
    });
    await host.agent({ name: "one", skills: [{ id: "one" }, { id: "two" }] }, { one: (ctx) => ctx.text, two: (ctx) => ctx.text.toUpperCase() }, { tasks: false, replaces: first });
    await until(() => answers.length === 1, "the caller saw the new card");
    off();
    expect(await answers[0]).toEqual([{ text: "HELLO" }]);
  });
});
