/**
 * The durable-task guarantees under concurrency, run against a single server
 * (task-races.test.ts) and a 3-node cluster (task-races-cluster.test.ts):
 * a cancel racing a task's completion records one terminal state; whoever
 * sees a task's final event reads a snapshot that already shows it; a task's
 * events replay from any cursor, and a follow resumed after a disconnect
 * misses and repeats nothing.
 */
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { AgentBusError, Identity, isTerminal, stateOf, type Bus, type StoredEvent, type Task, type TaskEvent, type TaskHandle, type TaskState } from "../../core/index.js";
import { canMove } from "../../core/wire/task.js";
import { eventually, grant, useBuses } from "../helpers/bus.js";

/**
 * Rejects with the signal's reason once it aborts, also when it already
 * has: a cancel can land while the handler is still reporting (its first
 * report is the worker's claim, which a follower sees), before it waits;
 * an "abort" listener added after the abort never fires.
 */
async function collect(events: AsyncIterable<StoredEvent>): Promise<StoredEvent[]> {
  const out: StoredEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}

function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

let tenants = 0;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const artifactText = (t: Task) => t.artifacts.flatMap((a) => a.parts.map((p) => p.text ?? "")).join("");
const taskOf = (e: TaskEvent): string => ("statusUpdate" in e ? e.statusUpdate.taskId : "artifactUpdate" in e ? e.artifactUpdate.taskId : e.message.taskId!);

/** A promise per key, resolved by whichever side gets there second. */
function signals() {
  const all = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  const of = (key: string) => {
    let s = all.get(key);
    if (!s) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      all.set(key, (s = { promise, resolve }));
    }
    return s;
  };
  return { wait: (key: string) => of(key).promise, fire: (key: string) => of(key).resolve() };
}

/** What a promise settled to: its value, or the code of the AgentBusError it rejected with. */
async function outcome<T>(p: Promise<T>): Promise<{ value?: T; code?: string }> {
  try {
    return { value: await p };
  } catch (err) {
    if (err instanceof AgentBusError) return { code: err.code };
    throw err;
  }
}

/** One stored event as the events stream holds it. */
interface LoggedEvent {
  seq: number;
  event: TaskEvent;
}

/**
 * Every event in the tenant's events stream (only `filter`'s, when given),
 * read straight from the stream: the whole log, not what a follower stops at.
 */
async function readLog(bus: Bus, filter?: string): Promise<LoggedEvent[]> {
  const consumer = await jetstream(bus.nc).consumers.get(bus.subjects.stream("EVENTS"), {
    deliver_policy: DeliverPolicy.All,
    ...(filter && { filter_subjects: filter }),
  });
  let left = (await consumer.info()).num_pending;
  const out: LoggedEvent[] = [];
  if (left === 0) return out;
  const iter = await consumer.consume();
  for await (const m of iter) {
    out.push({ seq: m.seq, event: m.json<TaskEvent>() });
    if (--left === 0) break;
  }
  iter.stop();
  return out;
}

/** Waits until every work item of the tenant is acked: the workers are done writing. */
async function settled(bus: Bus): Promise<void> {
  const jsm = await jetstreamManager(bus.nc);
  await eventually(async () => (await jsm.streams.info(bus.subjects.stream("WORK"))).state.messages === 0, 60_000, 100);
}

/** Checks one task's whole log: states only move forward, exactly one terminal state, nothing after it; returns it. */
function checkLog(id: string, log: LoggedEvent[]): TaskState {
  const states = log.map((l) => stateOf(l.event)).filter((s): s is TaskState => s !== undefined);
  const terminal = states.filter(isTerminal);
  expect(terminal, `terminal events of task ${id}`).toHaveLength(1);
  expect(stateOf(log.at(-1)!.event), `last event of task ${id} is its terminal state`).toBe(terminal[0]);
  expect(states, `task ${id} never re-enters SUBMITTED`).not.toContain("TASK_STATE_SUBMITTED");
  for (let i = 1; i < states.length; i++) expect(canMove(states[i - 1]!, states[i]!), `task ${id}: ${states[i - 1]} -> ${states[i]}`).toBe(true);
  for (let i = 1; i < log.length; i++) expect(log[i]!.seq).toBeGreaterThan(log[i - 1]!.seq);
  return terminal[0]!;
}

export function taskRaceSuite(label: string, servers: () => string[], replicas: number): void {
  describe(`durable task guarantees under races (${label})`, () => {
    const open = useBuses(servers, { replicas });
    const tenant = () => `races${process.pid}x${++tenants}`;

    it("a cancel racing completion: one terminal state, the same in the snapshot, the event log, result() and cancel()'s answer", { timeout: 180_000 }, async () => {
      const t = tenant();
      const agentBus = await open({ tenant: t, insecureAllowAll: true });
      const client = await open({ tenant: t });
      const started = signals();
      const N = 100;
      await agentBus.agent({ name: "racer", skills: [{ id: "race" }] }, {
        race: async (ctx) => {
          const i = Number(ctx.text);
          started.fire(ctx.taskId!);
          // Every tenth never ends on its own: only the cancel ends it.
          if (i % 10 === 9) return untilAborted(ctx.signal);
          // The others finish after 0–32 ms (a quiet one in under 20 ms ends
          // before the worker's first snapshot write: SUBMITTED to COMPLETED
          // in one write); two in three report progress every few ms
          // meanwhile; the odd ones stop early on the cancel, the even ones
          // ignore it.
          const until = Date.now() + (i % 9) * 4;
          const aborted = untilAborted(ctx.signal);
          aborted.catch(() => {});
          for (let step = 0; ; step++) {
            if (i % 3 !== 0) await ctx.status(`step ${step}`);
            const left = until - Date.now();
            if (left <= 0) break;
            const pause = sleep(Math.min(left, 3));
            await (i % 2 === 1 ? Promise.race([pause, aborted]) : pause);
          }
          return `done ${i}`;
        },
      }, { tasks: { concurrency: 128 } });

      const runs = await Promise.all(Array.from({ length: N }, async (_, i) => {
        const handle = await client.submit("race", String(i));
        // The submit handle's own result(): it follows the events from before the work was queued.
        const result = outcome(handle.result({ timeout: 60_000 }));
        let canceled: { value?: Task; code?: string };
        if (i % 10 === 8) {
          // Well after the end: refused.
          await result;
          canceled = await outcome(handle.cancel());
        } else if (i % 5 === 0) {
          // At once: queued, or just taken by the worker.
          canceled = await outcome(handle.cancel());
        } else {
          // 0–30 ms into the run: before, during or after completion.
          await started.wait(handle.id);
          await sleep(((i * 7) % 11) * 3);
          canceled = await outcome(handle.cancel());
        }
        return { i, handle, result: await result, canceled };
      }));

      await settled(client);
      const log = await readLog(client);
      const byTask = new Map<string, LoggedEvent[]>();
      for (const l of log) byTask.set(taskOf(l.event), [...(byTask.get(taskOf(l.event)) ?? []), l]);
      const states = new Map<TaskState, number>();
      for (const { i, handle, result, canceled } of runs) {
        const id = handle.id;
        const final = checkLog(id, byTask.get(id) ?? []);
        states.set(final, (states.get(final) ?? 0) + 1);
        expect(["TASK_STATE_COMPLETED", "TASK_STATE_CANCELED"], `task ${i}`).toContain(final);
        const [snapshot, viaHandle, polled] = await Promise.all([client.task(id), handle.get(), (await client.taskHandle(id)).result({ timeout: 10_000 })]);
        expect(snapshot.status.state, `task ${i}: snapshot`).toBe(final);
        expect(viaHandle.status.state, `task ${i}: handle.get()`).toBe(final);
        expect(polled.status.state, `task ${i}: result() of a new handle`).toBe(final);
        expect(result.code, `task ${i}: result() of the submit handle`).toBeUndefined();
        expect(result.value!.status.state, `task ${i}: result() of the submit handle`).toBe(final);
        // cancel() succeeds exactly when the task ends CANCELED, and says so; else NOT_CANCELABLE.
        if (final === "TASK_STATE_CANCELED") {
          expect(canceled.code, `task ${i}: cancel() of a task that ended CANCELED`).toBeUndefined();
          expect(canceled.value!.status.state).toBe("TASK_STATE_CANCELED");
          expect(snapshot.artifacts, `task ${i}: a canceled task has no result`).toEqual([]);
        } else {
          expect(canceled.code, `task ${i}: cancel() of a task that ended ${final} (it answered ${canceled.value?.status.state})`).toBe("NOT_CANCELABLE");
          expect(artifactText(snapshot)).toBe(`done ${i}`);
          expect(artifactText(result.value!)).toBe(`done ${i}`);
        }
      }
      // The deterministic members make sure both outcomes were exercised.
      expect(states.get("TASK_STATE_CANCELED")).toBeGreaterThanOrEqual(N / 10);
      expect(states.get("TASK_STATE_COMPLETED")).toBeGreaterThanOrEqual(N / 10);
    });

    it("a follow from the cursor after a turn, begun while the next turn ends, sees that turn's end", { timeout: 120_000 }, async () => {
      const t = tenant();
      const agentBus = await open({ tenant: t, insecureAllowAll: true });
      const client = await open({ tenant: t });
      // The second turn ends at once: its final state may be in the snapshot before its event is in the log.
      await agentBus.agent({ name: "turner", skills: [{ id: "turns" }] }, {
        turns: (ctx) => (ctx.history.length < 2 ? ctx.inputRequired("more?") : `got ${ctx.text}`),
      }, { tasks: { concurrency: 64 } });
      await Promise.all(Array.from({ length: 40 }, async (_, i) => {
        const first = await client.submit("turns", `first ${i}`);
        expect((await first.result({ timeout: 60_000 })).status.state).toBe("TASK_STATE_INPUT_REQUIRED");
        const last = await first.lastSequence();
        const next = await client.submit("turns", `second ${i}`, { taskId: first.id });
        // Start following the moment the snapshot shows the end: its event may not be in the log yet.
        while ((await client.task(first.id)).status.state !== "TASK_STATE_COMPLETED");
        const states = (await collect(next.events({ fromSequence: last! + 1 }))).map((e) => stateOf(e.event)).filter(Boolean);
        expect(states, `task ${first.id}`).toEqual(["TASK_STATE_COMPLETED"]);
      }));
    });

    it("whoever sees a task's final event reads a snapshot that already shows it, with its artifacts", { timeout: 180_000 }, async () => {
      const t = tenant();
      const agentBus = await open({ tenant: t, insecureAllowAll: true });
      const seed = Identity.generate().exportSeed();
      const client = await open({ tenant: t, identity: Identity.fromSeed(seed) });
      // The submitter's second connection, and an identity granted the task right.
      const again = await open({ tenant: t, identity: Identity.fromSeed(seed) });
      const observer = await open({ tenant: t });
      await grant(agentBus, "observer", { source: observer.id, target: "*", capabilities: ["task.rye", "task.rye-quick"] }, observer);
      const N = 30;
      await agentBus.agent({ name: "ryer", skills: [{ id: "rye" }, { id: "rye-quick" }] }, {
        rye: async (ctx) => {
          const i = Number(ctx.text);
          for (let k = 0; k < i % 4; k++) await ctx.artifact(`part ${k};`, { artifactId: "parts", append: k > 0, lastChunk: false });
          if (i % 5 === 3) return ctx.fail(`failing ${i}`);
          if (i % 5 === 4) return untilAborted(ctx.signal);
          await ctx.status(`working on ${i}`);
          return `done ${i}`;
        },
        // Returns at once: SUBMITTED to COMPLETED in one snapshot write.
        "rye-quick": (ctx) => `quick ${ctx.text}`,
      }, { tasks: { concurrency: 64 } });

      const readers: Array<[string, Bus]> = [["submitter", client], ["submitter's second connection", again], ["granted observer", observer]];
      const cancels: Array<Promise<Task>> = [];
      const checked = await Promise.all(Array.from({ length: N }, async (_, i) => {
        const quick = i % 3 === 2;
        const handle = await client.submit(quick ? "rye-quick" : "rye", String(i));
        const follow = async ([who, reader]: [string, Bus]) => {
          const h: TaskHandle = reader === client ? handle : await reader.taskHandle(handle.id);
          const seen: StoredEvent[] = [];
          for await (const e of h.events()) {
            seen.push(e);
            const state = stateOf(e.event);
            if (!state || !isTerminal(state)) {
              // Some tasks are canceled while they run (their first event is WORKING).
              if (who === "submitter" && !quick && i % 5 === 4 && seen.length === 1) cancels.push(handle.cancel());
              continue;
            }
            // The instant the final event is seen: both reads show it.
            const [viaBus, viaHandle] = await Promise.all([reader.task(handle.id), h.get()]);
            for (const [how, task] of [["bus.task", viaBus], ["handle.get", viaHandle]] as const) {
              expect(task.status.state, `${who}, task ${i}: ${how} right after the ${state} event`).toBe(state);
              expect(task.status, `${who}, task ${i}: ${how} shows the final event's status`).toEqual("statusUpdate" in e.event ? e.event.statusUpdate.status : undefined);
              const artifacts = seen.filter((s) => "artifactUpdate" in s.event).length;
              expect(task.artifacts.length > 0, `${who}, task ${i}: ${how} has the artifacts the events announced`).toBe(artifacts > 0);
            }
            return { state, text: artifactText(viaBus) };
          }
          throw new Error(`${who}, task ${i}: the events ended without a terminal state`);
        };
        const seen = await Promise.all(readers.map(follow));
        return { i, seen };
      }));
      for (const c of await Promise.all(cancels)) expect(c.status.state).toBe("TASK_STATE_CANCELED");
      expect(cancels.length).toBeGreaterThan(0);
      for (const { i, seen } of checked) {
        const expected = i % 3 === 2 ? ["TASK_STATE_COMPLETED", `quick ${i}`] : i % 5 === 3 ? ["TASK_STATE_FAILED", ""] : i % 5 === 4 ? ["TASK_STATE_CANCELED", ""] : ["TASK_STATE_COMPLETED", `done ${i}`];
        const parts = i % 3 === 2 ? "" : Array.from({ length: i % 4 }, (_, k) => `part ${k};`).join("");
        for (const s of seen) {
          expect(s.state, `task ${i}`).toBe(expected[0]);
          expect(s.text, `task ${i}`).toBe(i % 3 === 2 ? expected[1] : parts + expected[1]);
        }
      }
    });

    it("replays a task of 200 updates from every 7th cursor, and a follow resumed after disconnects misses and repeats nothing", { timeout: 180_000 }, async () => {
      const t = tenant();
      const agentBus = await open({ tenant: t, insecureAllowAll: true });
      const seed = Identity.generate().exportSeed();
      const client = await open({ tenant: t, identity: Identity.fromSeed(seed) });
      const UPDATES = 200;
      const halfway = signals();
      await agentBus.agent({ name: "chatty", skills: [{ id: "chatty" }] }, {
        chatty: async (ctx) => {
          for (let k = 0; k < UPDATES; k++) {
            // Holds halfway until the follower has resumed at least once, so it resumes onto a live task.
            if (k === UPDATES / 2) await halfway.wait("go");
            if (k % 2 === 0) await ctx.status(`step ${k}`);
            else await ctx.artifact(`${k};`, { artifactId: `${ctx.text}-chunks`, append: k > 1, lastChunk: false });
          }
          return `${ctx.text} done`;
        },
      }, { tasks: { concurrency: 4 } });
      // Two tasks at once, so each one's stream sequences have gaps (the other's events).
      const [main, other] = await Promise.all([client.submit("chatty", "main"), client.submit("chatty", "other")]);

      // Follows `main` live, dropping the follow every 23 events: by leaving
      // the iterator, or by closing the connection and opening a new one.
      const resumed: StoredEvent[] = [];
      let cursor: number | undefined;
      let follower = await open({ tenant: t, identity: Identity.fromSeed(seed) });
      let segments = 0;
      for (;;) {
        segments++;
        let inSegment = 0;
        let ended = false;
        const h = await follower.taskHandle(main.id);
        for await (const e of h.events(cursor === undefined ? {} : { fromSequence: cursor + 1 })) {
          resumed.push(e);
          cursor = e.sequence;
          const state = stateOf(e.event);
          if (state && isTerminal(state)) ended = true;
          if (++inSegment === 23) break;
        }
        if (segments === 2) halfway.fire("go");
        if (ended) break;
        if (segments % 3 === 0) {
          await follower.close();
          follower = await open({ tenant: t, identity: Identity.fromSeed(seed) });
        }
      }
      expect(segments).toBeGreaterThan(UPDATES / 23);
      await Promise.all([main.result({ timeout: 60_000 }), other.result({ timeout: 60_000 })]);

      // The whole log of `main`, from the stream itself.
      const log = await readLog(client, client.subjects.taskEventLog(client.id, main.id));
      checkLog(main.id, log);
      const all = await (async () => {
        const out: StoredEvent[] = [];
        for await (const e of main.events()) out.push(e);
        return out;
      })();
      // WORKING, 200 updates, the result artifact, COMPLETED.
      expect(all).toHaveLength(UPDATES + 3);
      expect(all.map((e) => e.sequence)).toEqual(log.map((l) => l.seq));
      expect(all.map((e) => e.event)).toEqual(log.map((l) => l.event));
      expect(resumed.map((e) => e.sequence), "the resumed follow: no gap, no duplicate, in order").toEqual(all.map((e) => e.sequence));
      expect(resumed.map((e) => e.event)).toEqual(all.map((e) => e.event));
      const final = await main.get();
      expect(artifactText(final)).toBe(Array.from({ length: UPDATES / 2 }, (_, j) => `${2 * j + 1};`).join("") + "main done");

      // From every 7th cursor: an event's own sequence, and the one after it
      // (which may be another task's event, or past the end).
      const cursors = new Set<number>();
      for (let j = 0; j < all.length; j += 7) cursors.add(all[j]!.sequence).add(all[j]!.sequence + 1);
      cursors.add(all.at(-1)!.sequence).add(all.at(-1)!.sequence + 1);
      const replayer = await open({ tenant: t, identity: Identity.fromSeed(seed) });
      const h = await replayer.taskHandle(main.id);
      for (const c of cursors) {
        const got: number[] = [];
        for await (const e of h.events({ fromSequence: c })) got.push(e.sequence);
        expect(got, `replay from ${c}`).toEqual(all.filter((e) => e.sequence >= c).map((e) => e.sequence));
      }
    });
  });
}
