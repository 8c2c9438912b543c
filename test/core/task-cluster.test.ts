import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import type { TaskEvent } from "../../core/index.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsCluster } from "../helpers/nats.js";

describe("durable tasks on a 3-node cluster (replicas 3)", () => {
  const nats = useNatsCluster(3);
  const open = useBuses(() => nats.cluster.urls, { replicas: 3 });

  it("SIGKILL of the work stream's leader during 2,000 tasks: every task completes exactly once", { timeout: 180_000 }, async () => {
    const tenant = "cluster";
    const agentBus = await open({ tenant, insecureAllowAll: true });
    const runs = new Map<string, number>();
    await agentBus.agent({ name: "counter", skills: [{ id: "count" }] }, {
      count: (ctx) => {
        runs.set(ctx.taskId!, (runs.get(ctx.taskId!) ?? 0) + 1);
        return "ok";
      },
    }, { tasks: { concurrency: 64, ackWaitMs: 5000 } });
    const client = await open({ tenant });
    const jsm = await jetstreamManager(client.nc);
    const workStream = client.subjects.stream("WORK");

    const total = 2000;
    const ids: string[] = [];
    let next = 0;
    let killed = false;
    const leaderName = async () => (await jsm.streams.info(workStream)).cluster?.leader;
    const worker = async () => {
      while (next < total) {
        const i = next++;
        if (i === total / 4 && !killed) {
          killed = true;
          const leader = await leaderName();
          const victim = nats.cluster.servers.find((s) => s.name === leader);
          expect(victim, `leader ${leader} among ${nats.cluster.servers.map((s) => s.name)}`).toBeDefined();
          await victim!.stop("SIGKILL");
        }
        try {
          const h = await client.submit("count", `task ${i}`);
          ids.push(h.id);
          const t = await h.result({ timeout: 120_000 });
          expect(t.status.state).toBe("TASK_STATE_COMPLETED");
        } catch (err) {
          throw new Error(`task ${i}: ${String(err)}`, { cause: err });
        }
      }
    };
    await Promise.all(Array.from({ length: 50 }, worker));
    expect(killed).toBe(true);
    expect(new Set(ids).size).toBe(total);

    // Let the system settle (every work item acked, repairs done), then
    // count COMPLETED events per task in the events stream itself.
    await eventually(async () => (await jsm.streams.info(workStream)).state.messages === 0, 60_000, 500);
    const completed = new Map<string, number>();
    // The cluster may still be settling after the kill: retry reads.
    const consumer = await eventually(() => jetstream(client.nc).consumers.get(client.subjects.stream("EVENTS"), { deliver_policy: DeliverPolicy.All }), 30_000, 500);
    const info = await eventually(() => consumer.info(), 30_000, 500);
    let left = info.num_pending;
    const iter = await consumer.consume();
    for await (const m of iter) {
      const e = m.json<TaskEvent>();
      if ("statusUpdate" in e && e.statusUpdate.status.state === "TASK_STATE_COMPLETED") {
        completed.set(e.statusUpdate.taskId, (completed.get(e.statusUpdate.taskId) ?? 0) + 1);
      }
      if (--left === 0) break;
    }
    iter.stop();
    expect(completed.size).toBe(total);
    expect([...completed.values()].every((n) => n === 1)).toBe(true);
    for (const id of ids) expect(runs.get(id) ?? 0).toBeGreaterThanOrEqual(1);
  });

  it("delayed tasks on replicas 3: they run at their time, once, across the loss of the work stream's leader", { timeout: 120_000 }, async () => {
    const tenant = "cluster-delayed";
    // Bring back any node an earlier test killed: losing the leader below must leave a majority.
    for (const server of nats.cluster.servers) if (!server.running) await server.restart();
    const client = await open({ tenant });
    if (!client.server.schedules) return; // message schedules: nats-server 2.12+
    const agentBus = await open({ tenant, insecureAllowAll: true });
    const started = new Map<string, number[]>();
    await agentBus.agent({ name: "stamper", skills: [{ id: "stamp" }] }, {
      stamp: (ctx) => {
        started.set(ctx.taskId!, [...(started.get(ctx.taskId!) ?? []), Date.now()]);
        return "ok";
      },
    }, { tasks: { ackWaitMs: 5000 } });
    const handles = await Promise.all(Array.from({ length: 20 }, (_, i) => client.submit("stamp", `t${i}`, { delayMs: 4000 + i * 100 })));
    const jsm = await jetstreamManager(client.nc);
    // Every node is back (the first test killed one); kill the work stream's leader before the tasks are due.
    await eventually(async () => (await jsm.streams.info(client.subjects.stream("WORK"))).cluster?.replicas?.every((r) => r.current) === true, 60_000, 250);
    const leader = (await jsm.streams.info(client.subjects.stream("WORK"))).cluster?.leader;
    await nats.cluster.servers.find((s) => s.name === leader)!.stop("SIGKILL");
    const tasks = await Promise.all(handles.map((h) => h.result({ timeout: 60_000 })));
    for (const t of tasks) {
      expect(t.status.state).toBe("TASK_STATE_COMPLETED");
      expect(started.get(t.id)).toHaveLength(1);
      expect(started.get(t.id)![0]).toBeGreaterThanOrEqual(t.metadata.runAt!);
    }
  });
});
