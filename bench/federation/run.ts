/**
 * bench/federation: the bus on two regions (clusters of one node joined by
 * gateways, started by the launcher), on loopback, in one run.
 *
 * - fast call p50/p99 to an agent in the caller's own region vs one in the
 *   other region (`CallOptions.region`), the echo agents in both regions
 *   being the same code with another `region` setting;
 * - durable task p50/p99 in the submitter's own region (each region keeps
 *   its own task plane) vs a task pinned to the other region
 *   (`SubmitOptions.region`: queued, stored and run there, followed
 *   through the gateway);
 * - registry propagation: from an agent's start in west to the moment a
 *   caller in east discovers it online through its region's view;
 * - failover: a caller connected to west (with east's servers to fall back
 *   on) prefers its own region; every node of west is killed; `failover_s`
 *   is the time from the kill to the first call answered (by the east
 *   agent, after the client reconnected to east).
 *
 * - baseline: raw NATS request/reply from a client in east to a responder
 *   in east and one in west (what the gateway costs without the bus).
 *
 * Each pair of cases runs alternately, one call or task of each in turn.
 *
 * Prints one JSON line with `ratios.cross_region_call_p50`,
 * `ratios.cross_region_task_p50` and `failover_s`.
 *
 *   npm run bench:federation        (BENCH_FED_N calls/tasks per case, default 500 / 200)
 */
import { connect as natsConnect } from "@nats-io/transport-node";
import { connect, createLogger, type Bus } from "../../core/index.js";
import { startSupercluster, type NatsSupercluster } from "../../nats/index.js";
import { emit, now, progress, ratio, round, runBench, summarize } from "../lib.js";

const CALLS = Number(process.env.BENCH_FED_N ?? 500);
const TASKS = Number(process.env.BENCH_FED_TASKS ?? 200);
const TENANT = "fed";
const logger = createLogger({ level: "error" });

let sc: NatsSupercluster | undefined;
const buses: Bus[] = [];

async function bus(servers: string[], region: string): Promise<Bus> {
  const b = await connect({ servers, auth: sc!.auth, tenant: TENANT, region, regions: ["east", "west"], insecureAllowAll: true, presenceMaxAgeMs: 3000, logger });
  buses.push(b);
  return b;
}

/** `n` runs each of `a` and `b`, alternating (so neither gets the warmer half of the run), after a warm-up of both. */
async function timedPair(n: number, a: () => Promise<unknown>, b: () => Promise<unknown>): Promise<[number[], number[]]> {
  for (let i = 0; i < Math.min(50, n); i++) await Promise.all([a(), b()]);
  const out: [number[], number[]] = [[], []];
  for (let i = 0; i < n; i++) {
    for (const [k, op] of [a, b].entries()) {
      const t0 = now();
      await op();
      out[k]!.push(now() - t0);
    }
  }
  return out;
}

const pick = (xs: number[]) => {
  const s = summarize(xs);
  return { p50: round(s.p50), p99: round(s.p99) };
};

async function main(): Promise<void> {
  sc = await startSupercluster({ regions: ["east", "west"], nodesPerRegion: 1 });
  const east = sc.clusters["east"]!.urls;
  const west = sc.clusters["west"]!.urls;
  progress(`supercluster up: east ${east.join(",")}, west ${west.join(",")}; nats-server ${sc.servers[0]!.version}`);
  const eastAgent = await bus(east, "east");
  const westAgent = await bus(west, "west");
  for (const b of [eastAgent, westAgent]) await b.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text });
  const eastCaller = await bus(east, "east");
  // Connected to west (the client picks among its servers at random: try until it is), able to reconnect to east.
  let westCaller = await bus([...west, ...east], "west");
  for (let i = 0; i < 20 && westCaller.nc.info?.cluster !== "west"; i++) {
    await westCaller.close();
    westCaller = await bus([...west, ...east], "west");
  }
  if (westCaller.nc.info?.cluster !== "west") throw new Error("the west caller never connected to west");
  const until = Date.now() + 15_000;
  while ([eastCaller, westCaller].some((c) => c.discover({ capability: "echo", online: true }).length < 2)) {
    if (Date.now() > until) throw new Error("the agents never appeared in both regions' views");
    await new Promise((r) => setTimeout(r, 50));
  }

  progress(`fast calls: ${CALLS} local, ${CALLS} across the gateway`);
  const [callLocal, callCross] = await timedPair(CALLS, () => eastCaller.call("echo", "x", { region: "east" }), () => eastCaller.call("echo", "x", { region: "west" }));

  // The baseline of the same run: raw NATS request/reply to a responder in each region, from a raw client in east.
  progress(`raw NATS baseline: ${CALLS} requests local, ${CALLS} across the gateway`);
  const [rawEast, rawWest, rawCaller] = await Promise.all([natsConnect({ servers: east, ...sc.auth }), natsConnect({ servers: west, ...sc.auth }), natsConnect({ servers: east, ...sc.auth })]);
  for (const [nc, region] of [[rawEast, "east"], [rawWest, "west"]] as const) nc.subscribe(`raw.echo.${region}`, { callback: (_err, m) => void m.respond(m.data) });
  await Promise.all([rawEast.flush(), rawWest.flush()]);
  const [rawLocal, rawCross] = await timedPair(CALLS, () => rawCaller.request("raw.echo.east", "x"), () => rawCaller.request("raw.echo.west", "x"));
  await Promise.all([rawEast.close(), rawWest.close(), rawCaller.close()]);

  progress(`durable tasks: ${TASKS} in the submitter's region, ${TASKS} pinned to the other`);
  const task = (b: Bus, region: string) => async () => {
    const t = await (await b.submit("echo", "x", { region })).result({ timeout: 30_000 });
    if (t.status.state !== "TASK_STATE_COMPLETED" || t.metadata.region !== region) throw new Error(`task ${t.id} ended ${t.status.state} in ${String(t.metadata.region)}`);
  };
  const [taskLocal, taskCross] = await timedPair(TASKS, task(eastCaller, "east"), task(eastCaller, "west"));

  progress("registry propagation: 10 agents started in west, discovered from east");
  const propagation: number[] = [];
  for (let i = 0; i < 10; i++) {
    const cap = `probe${i}`;
    const agent = await bus(west, "west");
    const t0 = now();
    await agent.agent({ name: cap, skills: [{ id: cap }] }, { [cap]: () => "ok" });
    while (eastCaller.discover({ capability: cap, online: true }).length === 0) {
      if (now() - t0 > 15_000) throw new Error(`${cap} never appeared in east's view`);
      await new Promise((r) => setTimeout(r, 5));
    }
    propagation.push(now() - t0);
  }

  progress("failover: killing every node of west");
  // West's caller prefers its own region until west is gone.
  const before = await westCaller.call("echo", "x");
  if (before.parts[0]?.text !== "x") throw new Error("unexpected echo");
  const killedAt = now();
  await Promise.all(sc.clusters["west"]!.servers.map((s) => s.stop("SIGKILL")));
  let failoverMs: number | undefined;
  while (now() - killedAt < 60_000) {
    try {
      await westCaller.call("echo", "x", { timeout: 1000 });
      failoverMs = now() - killedAt;
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  if (failoverMs === undefined) throw new Error("no call answered within 60 s of the region loss");
  const after = westCaller.nc.info?.cluster;

  const call = { local: pick(callLocal), cross_region: pick(callCross) };
  const raw = { local: pick(rawLocal), cross_region: pick(rawCross) };
  const tasks = { local: pick(taskLocal), cross_region: pick(taskCross) };
  emit({
    bench: "federation",
    server: sc.servers[0]!.version,
    node: process.version,
    topology: { regions: ["east", "west"], nodesPerRegion: 1, taskPlanes: "per region" },
    calls: CALLS,
    tasks: TASKS,
    call,
    task: tasks,
    baseline: { raw_nats_request: raw },
    registry_propagation_ms: pick(propagation),
    failover_s: round(failoverMs / 1000, 3),
    failover: { callerClusterBefore: "west", callerClusterAfter: after },
    ratios: {
      cross_region_call_p50: ratio(call.cross_region.p50, call.local.p50),
      cross_region_task_p50: ratio(tasks.cross_region.p50, tasks.local.p50),
      // What the gateway costs a raw request, and the bus's call over raw NATS on each path.
      raw_cross_region_request_p50: ratio(raw.cross_region.p50, raw.local.p50),
      call_vs_raw_local_p50: ratio(call.local.p50, raw.local.p50),
      call_vs_raw_cross_region_p50: ratio(call.cross_region.p50, raw.cross_region.p50),
    },
    // Milliseconds the gateway adds at p50: to a raw request, and to a bus call.
    gateway_added_p50_ms: { raw: round(raw.cross_region.p50 - raw.local.p50), call: round(call.cross_region.p50 - call.local.p50) },
    targets: { cross_region_call_p50: 1.2, cross_region_task_p50: 1.2 },
  });
}

async function stop(): Promise<void> {
  await Promise.all(buses.splice(0).map((b) => b.close().catch(() => {})));
  await sc?.cleanup();
}

await runBench(main, stop);
