/**
 * Gateways of a federated bus, one per region: a task running in one
 * region is followed, replayed and read through the other region's
 * gateway (A2A with the official SDK client, and the monitor's REST),
 * and each gateway shows the topology, in its REST API and in the console
 * (Chromium).
 */
import type { FastifyInstance } from "fastify";
import { ClientFactory } from "@a2a-js/sdk/client";
import { TaskState } from "@a2a-js/sdk";
import { userMessage } from "../helpers/a2a.js";
import { afterAll, describe, expect, it } from "vitest";
import { compareVersions, connect, Identity, type Bus } from "../../core/index.js";
import { createGateway } from "../../bridges/gateway/index.js";
import { eventually, quietLogger } from "../helpers/bus.js";
import { useNatsSupercluster } from "../helpers/nats.js";
import { hasChromium, openPage, screenshot, useBrowser } from "../helpers/browser.js";

const REGIONS = ["east", "west"];

describe("gateways of a federated bus, one per region", () => {
  const nats = useNatsSupercluster({ regions: REGIONS, nodesPerRegion: 1 });
  const browser = useBrowser("federated console");
  const buses: Bus[] = [];
  const apps: FastifyInstance[] = [];
  afterAll(async () => {
    await Promise.all(apps.map((a) => a.close()));
    await Promise.all(buses.map((b) => b.close().catch(() => {})));
  });
  const bus = async (region: string, identity?: Identity): Promise<Bus> => {
    const b = await connect({ servers: nats.supercluster.clusters[region]!.urls, auth: nats.supercluster.auth, tenant: "gw", region, regions: REGIONS, identity, insecureAllowAll: true, presenceMaxAgeMs: 3000, logger: quietLogger });
    buses.push(b);
    return b;
  };
  /** A gateway in `region`, as one of the replicas sharing `identity`. */
  const gateway = async (region: string, identity: Identity): Promise<string> => {
    const app = await createGateway({ bus: await bus(region, identity), open: true });
    apps.push(app);
    return app.listen({ port: 0, host: "127.0.0.1" });
  };

  /**
   * Reads a stream until `done` says so or it ends; fails after `ms` with
   * the events it saw, so a stream that stalls says where.
   */
  async function follow<T extends { payload?: { $case?: string } }>(what: string, stream: AsyncIterable<T>, done: (e: T) => boolean, ms = 20_000): Promise<void> {
    const it = stream[Symbol.asyncIterator]();
    const seen: string[] = [];
    const deadline = Date.now() + ms;
    try {
      for (;;) {
        let timer: NodeJS.Timeout | undefined;
        const next = await Promise.race([
          it.next(),
          new Promise<"stalled">((r) => (timer = setTimeout(() => r("stalled"), Math.max(0, deadline - Date.now())))),
        ]).finally(() => clearTimeout(timer));
        if (next === "stalled") throw new Error(`${what} stalled for ${ms} ms after [${seen.join(", ")}]`);
        if (next.done) return;
        seen.push(next.value.payload?.$case ?? "?");
        if (done(next.value)) return;
      }
    } finally {
      void it.return?.();
    }
  }

  it("a task running in east is followed through west's gateway (SubscribeToTask) and read there with the same event cursors; each gateway shows the topology", async () => {
    if (compareVersions(nats.supercluster.servers[0]!.version, "2.10.0") < 0) return;
    const agentBus = await bus("east");
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await agentBus.agent({ name: "slow", skills: [{ id: "slow" }] }, {
      slow: async (ctx) => {
        await ctx.status("step 1");
        await gate;
        await ctx.artifact(`done in ${agentBus.region}`);
      },
    });
    const identity = Identity.generate();
    const [eastUrl, westUrl] = [await gateway("east", identity), await gateway("west", identity)];
    // West's gateway knows the agent once west's registry view has sourced east's registration.
    await eventually(async () => (await fetch(`${westUrl}/a2a/slow/.well-known/agent-card.json`)).status === 200, 15_000, 100);
    const factory = new ClientFactory();
    const east = await factory.createFromUrl(`${eastUrl}/a2a/slow/.well-known/agent-card.json`, "");
    const west = await factory.createFromUrl(`${westUrl}/a2a/slow/.well-known/agent-card.json`, "");

    // Through west's gateway (no provider there): the task is queued and runs in east.
    let taskId = "";
    await follow("west's SendStreamingMessage", west.sendMessageStream({ tenant: "", message: userMessage("go"), configuration: undefined, metadata: undefined }), (e) => {
      if (e.payload?.$case === "task") taskId = e.payload.value.id;
      return e.payload?.$case === "statusUpdate";
    });
    expect(taskId).not.toBe("");
    // Picked up again through east's gateway, then followed to the end.
    const seen: string[] = [];
    await follow("east's SubscribeToTask", east.resubscribeTask({ tenant: "", id: taskId }), (e) => {
      seen.push(e.payload?.$case ?? "?");
      if (seen.length === 1) release();
      return false;
    });
    expect(seen[0]).toBe("task");
    expect(seen).toContain("artifactUpdate");
    const final = await west.getTask({ tenant: "", id: taskId, historyLength: undefined });
    expect(final.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(final.artifacts[0]!.parts[0]!.content).toEqual({ $case: "text", value: "done in east" });
    // The monitor of either gateway: the same stored events, with the same sequences.
    const events = async (url: string) => ((await (await fetch(`${url}/v1/tasks/${taskId}`)).json()) as { task: { metadata: Record<string, unknown> }; events: Array<{ sequence: number }> });
    const [fromEast, fromWest] = [await events(eastUrl), await events(westUrl)];
    expect(fromWest.task.metadata.region).toBe("east");
    expect(fromWest.events.map((e) => e.sequence)).toEqual(fromEast.events.map((e) => e.sequence));
    expect(fromWest.events.length).toBeGreaterThanOrEqual(3);
    // The topology, from west: both regions, east's agent, the link up.
    await eventually(async () => {
      const t = (await (await fetch(`${westUrl}/v1/topology`)).json()) as { region: string; regions: Array<{ name: string; local: boolean; agents: number; link?: { up: boolean } }> };
      return t.region === "west" && t.regions.find((r) => r.name === "east")?.agents === 1 && t.regions.find((r) => r.name === "east")?.link?.up === true;
    }, 10_000, 100);
    // The console of west's gateway shows both regions, east's agent and the link to east.
    if (hasChromium) {
      const { page, errors, consoleErrors } = await openPage(browser(), `${westUrl}/monitor/`);
      const eastRow = page.locator('#regions tr[data-region="east"]');
      await eastRow.locator("td.online").waitFor();
      expect(await eastRow.locator("td").allTextContents()).toEqual(["east", "1", "1", expect.stringMatching(/^up/)]);
      expect(await page.locator('#regions tr[data-region="west"] td').first().textContent()).toBe("west (here)");
      expect(await page.locator('#agents tr[data-agent="slow"]').textContent()).toContain("east");
      await screenshot(page, "console", "wide-federated-overview");
      expect([...errors, ...consoleErrors]).toEqual([]);
      await page.close();
    }
  }, 90_000);
});
