import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { Identity, type Task } from "../../core/index.js";
import { draft, startWriter } from "../../agents/writer.js";
import { useNatsServer } from "../helpers/nats.js";
import { eventually, grant, useBuses } from "../helpers/bus.js";

// The built command (the package's bin); AGENTBUS_CLI_MAIN runs these against another entry point.
const main = process.env.AGENTBUS_CLI_MAIN ? resolve(process.env.AGENTBUS_CLI_MAIN) : fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));

/** A CLI process whose output is recorded with the time each piece arrived. */
interface Cli {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  waitFor: (text: string, stream?: "stdout" | "stderr", timeoutMs?: number) => Promise<void>;
  exited: Promise<number>;
}

const started: ChildProcess[] = [];
afterEach(() => {
  for (const c of started.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

function cli(args: string[]): Cli {
  const child = spawn(process.execPath, [main, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  started.push(child);
  let out = "";
  let err = "";
  const watchers = new Set<() => void>();
  child.stdout!.on("data", (d) => {
    out += String(d);
    watchers.forEach((w) => w());
  });
  child.stderr!.on("data", (d) => {
    err += String(d);
    watchers.forEach((w) => w());
  });
  const exited = new Promise<number>((r) => child.on("exit", (code, signal) => r(code ?? (signal ? 128 : -1))));
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitFor: (text, stream = "stdout", timeoutMs = 20_000) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if ((stream === "stdout" ? out : err).includes(text)) {
            watchers.delete(check);
            clearTimeout(timer);
            resolve();
          }
        };
        const timer = setTimeout(() => {
          watchers.delete(check);
          reject(new Error(`no ${JSON.stringify(text)} on ${stream} in ${timeoutMs} ms; stdout: ${out}\nstderr: ${err}`));
        }, timeoutMs);
        watchers.add(check);
        check();
      }),
    exited,
  };
}

/** Runs to the end and notes when each of `marks` first showed up on stdout. */
async function runCli(args: string[], marks: string[] = []): Promise<{ code: number; stdout: string; stderr: string; at: Map<string, number> }> {
  const c = cli(args);
  const at = new Map<string, number>();
  c.child.stdout!.on("data", () => {
    for (const m of marks) if (!at.has(m) && c.stdout().includes(m)) at.set(m, Date.now());
  });
  const code = await c.exited;
  return { code, stdout: c.stdout(), stderr: c.stderr(), at };
}

const jsonLines = (text: string): Array<Record<string, unknown>> =>
  text
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);

// Each command is a fresh Node process compiling TypeScript: allow for a loaded machine.
describe("agentbus send, tail, agent run", { timeout: 60_000 }, () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  const common = (tenant: string) => ["--nats", nats.server.url, "--tenant", tenant];
  /**
   * An operator: an identity the ACL grants every task of the tenant
   * (`task.>`), as a bus and as a seed file for the CLI.
   */
  const operator = async (tenant: string) => {
    const identity = Identity.generate();
    const bus = await open({ tenant, identity });
    await grant(bus, "operator", { source: identity.id, target: "*", capabilities: ["task.>"] }, bus);
    const seed = join(mkdtempSync(join(tmpdir(), "agentbus-operator-")), "operator.nk");
    writeFileSync(seed, identity.exportSeed(), { mode: 0o600 });
    return { bus, seed };
  };

  it("send streams the writer's chunks as they arrive, then exits 0", async () => {
    const tenant = "send-stream";
    await startWriter(await open({ tenant, insecureAllowAll: true }), { delayMs: 300 });
    const sentences = draft("the sea");
    const r = await runCli(["send", "write", "the sea", ...common(tenant)], [sentences[0]!, sentences[4]!, "[completed]"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^task [0-9a-f]{48} → write\n/);
    expect(r.stdout).toContain("[working] writing about the sea\n");
    expect(r.stdout).toContain(`${sentences.join("")}\n[completed]\n`);
    // The first sentence was printed well before the last one and the end: streamed, not buffered.
    expect(r.at.get("[completed]")! - r.at.get(sentences[0]!)!).toBeGreaterThanOrEqual(3 * 300);
    expect(r.at.get(sentences[4]!)! - r.at.get(sentences[0]!)!).toBeGreaterThanOrEqual(3 * 300);
  });

  it("send --json prints one JSON object per line; JSON input becomes a data part", async () => {
    const tenant = "send-json";
    await startWriter(await open({ tenant, insecureAllowAll: true }), { delayMs: 10 });
    const r = await runCli(["send", "write", '{"topic": "rivers"}', "--json", ...common(tenant)]);
    expect(r.code, r.stderr).toBe(0);
    const [first, ...events] = jsonLines(r.stdout);
    const task = (first as { task: Task }).task;
    expect(task.metadata.capability).toBe("write");
    expect(task.history[0]!.parts).toEqual([{ data: { topic: "rivers" } }]);
    expect(events.length).toBeGreaterThanOrEqual(2 + draft("rivers").length);
    const sequences = events.map((e) => e.sequence as number);
    expect([...sequences].sort((a, b) => a - b)).toEqual(sequences);
    const chunks = events.flatMap((e) => {
      const u = (e.event as { artifactUpdate?: { artifact: { parts: Array<{ text: string }> } } }).artifactUpdate;
      return u ? [u.artifact.parts[0]!.text] : [];
    });
    expect(chunks).toEqual(draft("rivers"));
    expect(events.at(-1)).toMatchObject({ event: { statusUpdate: { taskId: task.id, status: { state: "TASK_STATE_COMPLETED" } } }, from: expect.stringMatching(/^U/) });
  });

  it("send exits 1 when the task fails or is rejected, and says why", async () => {
    const tenant = "send-fail";
    await (await open({ tenant, insecureAllowAll: true })).agent({ name: "grumpy", skills: [{ id: "fail" }, { id: "reject" }] }, {
      fail: async (ctx) => {
        await ctx.status("trying");
        return ctx.fail("out of luck");
      },
      reject: (ctx) => ctx.reject("not my job"),
    });
    const failed = await runCli(["send", "fail", "x", ...common(tenant)]);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toContain("[failed] out of luck\n");
    const rejected = await runCli(["send", "reject", "x", "--json", ...common(tenant)]);
    expect(rejected.code).toBe(1);
    expect(jsonLines(rejected.stdout).at(-1)).toMatchObject({ event: { statusUpdate: { status: { state: "TASK_STATE_REJECTED" } } } });
  });

  it("send: Ctrl-C cancels the task and waits for its end (exit 1); --no-wait returns at once", async () => {
    const tenant = "send-cancel";
    const agentBus = await open({ tenant, insecureAllowAll: true });
    await startWriter(agentBus, { delayMs: 400 });
    const c = cli(["send", "write", "a long story", ...common(tenant)]);
    await c.waitFor(draft("a long story")[0]!);
    c.child.kill("SIGINT");
    expect(await c.exited).toBe(1);
    expect(c.stdout()).toContain("[canceled]");
    expect(c.stderr()).toContain("canceling task");
    const id = /^task (\S+)/.exec(c.stdout())![1]!;
    const task = await agentBus.task(id);
    expect(task.status.state).toBe("TASK_STATE_CANCELED");
    expect(task.artifacts[0]!.parts.length).toBeLessThan(draft("a long story").length);

    const queued = await runCli(["send", "nobody-serves-this", "hi", "--no-wait", "--json", ...common(tenant)]);
    expect(queued.code).toBe(0);
    const { task: submitted } = jsonLines(queued.stdout)[0] as { task: Task };
    // Nobody serves it: only its submitter, or an identity granted its tasks, sees it.
    expect((await (await operator(tenant)).bus.task(submitted.id)).status.state).toBe("TASK_STATE_SUBMITTED");
  });

  it("send to a capability no online agent offers fails at once (NO_RESPONDERS, exit 1) and queues nothing; --wait queues it and follows it until an agent takes it", async () => {
    const tenant = "send-none";
    const { bus: op } = await operator(tenant);
    const refused = await runCli(["send", "late", "hi", "--json", ...common(tenant)]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe("");
    const error = JSON.parse(refused.stderr.trim().split("\n").at(-1)!) as { error: { code: string; message: string } };
    expect(error.error.code).toBe("NO_RESPONDERS");
    expect(error.error.message).toContain("no online agent offers late in tenant send-none: nothing was queued");
    expect((await op.workload()).capabilities).toEqual([]);

    const waiting = cli(["send", "late", "hi", "--wait", ...common(tenant)]);
    await waiting.waitFor("→ late");
    await eventually(async () => (await op.workload()).capabilities.some((c) => c.capability === "late" && c.pending.normal === 1), 10_000);
    await (await open({ tenant, insecureAllowAll: true })).agent({ name: "late", skills: [{ id: "late" }] }, { late: (ctx) => `late ${ctx.text}` });
    expect(await waiting.exited, waiting.stderr()).toBe(0);
    expect(waiting.stdout()).toContain("late hi\n[completed]\n");

    // Once an agent is online, a plain send goes through.
    const plain = await runCli(["send", "late", "again", ...common(tenant)]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toContain("late again\n[completed]\n");
  });

  it("send --delay runs the task at its time and says when; task get and task ls show the time; a bad one exits 2", async () => {
    const tenant = "send-delay";
    const agentBus = await open({ tenant, insecureAllowAll: true });
    if (!agentBus.server.schedules) return; // message schedules: nats-server 2.12+
    let ranAt = 0;
    await agentBus.agent({ name: "later", skills: [{ id: "later" }] }, {
      later: (ctx) => {
        ranAt = Date.now();
        return `later ${ctx.text}`;
      },
    });
    const { bus: op, seed } = await operator(tenant);
    const r = await runCli(["send", "later", "hi", "--delay", "1500", "--json", "--seed", seed, ...common(tenant)]);
    expect(r.code, r.stderr).toBe(0);
    const { task } = jsonLines(r.stdout)[0] as { task: Task };
    const runAt = task.metadata.runAt!;
    expect(ranAt).toBeGreaterThanOrEqual(runAt);
    expect(jsonLines(r.stdout).at(-1)).toMatchObject({ event: { statusUpdate: { status: { state: "TASK_STATE_COMPLETED" } } } });
    const got = await runCli(["task", "get", task.id, "--seed", seed, ...common(tenant)]);
    expect(got.code, got.stderr).toBe(0);
    expect(got.stdout).toContain(`TASK_STATE_COMPLETED  later  runs at ${new Date(runAt).toISOString()}`);
    const at = new Date(Date.now() + 60_000);
    const human = await runCli(["send", "later", "again", "--at", at.toISOString(), "--no-wait", "--seed", seed, ...common(tenant)]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain(`→ later (runs at ${at.toISOString()})`);
    const id = /^task (\S+)/.exec(human.stdout)![1]!;
    // task ls: the waiting task with its time, newest first, and a state filter.
    const listed = await runCli(["task", "ls", "--state", "submitted", "--seed", seed, ...common(tenant)]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout.trim().split("\n")).toEqual([expect.stringMatching(new RegExp(`^${id}  submitted  later  \\S+  runs at ${at.toISOString().replace(/[.]/g, "\\.")}$`))]);
    expect((await runCli(["task", "ls", "--seed", seed, ...common(tenant)])).stdout.trim().split("\n").map((l) => l.split("  ")[0])).toEqual([id, task.id]);
    const badState = await runCli(["task", "ls", "--state", "sleeping", "--seed", seed, ...common(tenant)]);
    expect(badState.code).toBe(2);
    expect(badState.stderr).toContain("unknown task state TASK_STATE_SLEEPING");
    expect((await (await op.taskHandle(id)).cancel()).status.state).toBe("TASK_STATE_CANCELED");
    const bad = await runCli(["send", "later", "x", "--delay", "soon", ...common(tenant)]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("delayMs");
  });

  it("schedule create, ls, pause, resume and rm: runs appear as the creator's tasks; a bad cron exits 2", async () => {
    const tenant = "schedule-cli";
    const agentBus = await open({ tenant, insecureAllowAll: true });
    if (!agentBus.server.cron) return; // cron schedules: nats-server 2.14+
    const ran: string[] = [];
    await agentBus.agent({ name: "tick", skills: [{ id: "tick" }] }, {
      tick: (ctx) => {
        ran.push(ctx.task!.id);
        return `tick ${ctx.text}`;
      },
    });
    const { seed } = await operator(tenant);
    const made = await runCli(["schedule", "create", "tick", "hi", "--every", "1000", "--id", "beat", "--seed", seed, ...common(tenant)]);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(/^beat {2}tick {2}every 1000 ms {2}next \d{4}-\d\d-\d\dT/);
    const nightly = await runCli(["schedule", "create", "tick", "night", "--cron", "0 2 * * *", "--tz", "America/New_York", "--id", "nightly", "--json", "--seed", seed, ...common(tenant)]);
    expect(nightly.code, nightly.stderr).toBe(0);
    expect(JSON.parse(nightly.stdout)).toMatchObject({ id: "nightly", cron: "0 0 2 * * *", timeZone: "America/New_York", paused: false });
    await eventually(() => ran.length >= 2, 15_000, 100);
    const listed = await runCli(["schedule", "ls", "--seed", seed, ...common(tenant)]);
    expect(listed.stdout.trim().split("\n").map((l) => l.split("  ").slice(0, 3).join("  "))).toEqual(["beat  tick  every 1000 ms", 'nightly  tick  cron "0 0 2 * * *" America/New_York']);
    const paused = await runCli(["schedule", "pause", "beat", "--seed", seed, ...common(tenant)]);
    expect(paused.stdout.trim()).toBe("beat  tick  every 1000 ms  paused");
    const tasks = await runCli(["task", "ls", "--state", "completed", "--seed", seed, ...common(tenant)]);
    for (const id of ran) expect(tasks.stdout).toContain(id);
    expect((await runCli(["schedule", "resume", "beat", "--seed", seed, ...common(tenant)])).stdout).toContain("next ");
    for (const id of ["beat", "nightly"]) expect((await runCli(["schedule", "rm", id, "--seed", seed, ...common(tenant)])).stdout.trim()).toBe(`${id} deleted`);
    const gone = await runCli(["schedule", "rm", "beat", "--seed", seed, ...common(tenant)]);
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toContain("schedule beat not found");
    const bad = await runCli(["schedule", "create", "tick", "x", "--cron", "every day", "--seed", seed, ...common(tenant)]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("cron");
  });

  it("work shows queued work per capability and priority; send --priority queues at that level", async () => {
    const tenant = "work-cli";
    const { bus: op, seed } = await operator(tenant);
    await op.submit("later.report", "a");
    await op.submit("later.report", "b", { priority: "low" });
    const sent = await runCli(["send", "later.report", "c", "--priority", "high", "--no-wait", "--json", "--seed", seed, ...common(tenant)]);
    expect(sent.code, sent.stderr).toBe(0);
    expect((jsonLines(sent.stdout)[0] as { task: Task }).task.metadata.priority).toBe("high");
    const shown = await runCli(["work", "--seed", seed, ...common(tenant)]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout.trim().split("\n")).toEqual(["capability    high  normal  low  running", "later.report  1     1       1    0", "delayed tasks: 0"]);
    const json = await runCli(["work", "--json", "--seed", seed, ...common(tenant)]);
    expect(JSON.parse(json.stdout)).toEqual({ capabilities: [{ capability: "later.report", pending: { high: 1, normal: 1, low: 1 }, inProgress: 0 }], delayed: 0 });
    const bad = await runCli(["send", "later.report", "d", "--priority", "urgent", "--no-wait", "--seed", seed, ...common(tenant)]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("priority must be one of high, normal, low");
  });

  it("send --task answers a task waiting for input, as the identity that submitted it", async () => {
    const tenant = "send-turns";
    await (await open({ tenant, insecureAllowAll: true })).agent({ name: "asker", skills: [{ id: "ask" }] }, {
      ask: (ctx) => (ctx.history.length < 2 ? ctx.inputRequired("What about?") : `a story about ${ctx.text}`),
    });
    const dir = mkdtempSync(join(tmpdir(), "agentbus-turns-"));
    const seed = join(dir, "me.nk");
    writeFileSync(seed, Identity.generate().exportSeed(), { mode: 0o600 });
    const first = await runCli(["send", "ask", "a story", "--seed", seed, ...common(tenant)]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain("[input-required] What about?\n");
    const id = /^task (\S+)/.exec(first.stdout)![1]!;
    expect(first.stderr).toContain(`agentbus send ask "<answer>" --task ${id} --seed ${seed}`);

    // To another identity the task does not exist: refused before anything is sent.
    const stranger = await runCli(["send", "ask", "dragons", "--task", id, ...common(tenant)]);
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toContain(`task ${id} not found`);

    const second = await runCli(["send", "ask", "dragons", "--task", id, "--seed", seed, "--json", ...common(tenant)]);
    expect(second.code, `${second.stderr}\n${second.stdout}`).toBe(0);
    const [head, ...events] = jsonLines(second.stdout);
    expect((head as { task: Task }).task.id).toBe(id);
    // Only the new turn's events: no replay of the first question.
    expect(events.some((e) => JSON.stringify(e).includes("What about?"))).toBe(false);
    expect(JSON.stringify(events)).toContain("a story about dragons");
    expect(events.at(-1)).toMatchObject({ event: { statusUpdate: { status: { state: "TASK_STATE_COMPLETED" } } } });
  });

  it("tail follows the tenant's events live, filtered by capability, until Ctrl-C", async () => {
    const tenant = "tail-live";
    await startWriter(await open({ tenant, insecureAllowAll: true }), { delayMs: 10 });
    await (await open({ tenant, insecureAllowAll: true })).agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text });
    const client = await open({ tenant });
    const before = await client.submit("write", "old news");
    await before.result();

    // An operator's view of other identities' tasks.
    const { seed } = await operator(tenant);
    const t = cli(["tail", "--capability", "write", "--seed", seed, ...common(tenant)]);
    await t.waitFor("following task events", "stderr");
    const echo = await client.submit("echo", "ignored");
    const write = await client.submit("write", "fresh news");
    await Promise.all([echo.result(), write.result()]);
    await t.waitFor(`${write.id}  write  completed`);
    t.child.kill("SIGINT");
    expect(await t.exited).toBe(0);
    const out = t.stdout();
    expect(out).toContain(`${write.id}  write  working: writing about fresh news`);
    expect(out).toContain(`${write.id}  write  artifact answer (append, last): ${JSON.stringify(draft("fresh news")[4])}`);
    expect(out).not.toContain(echo.id); // other capability
    expect(out).not.toContain(before.id); // before tail started

    // --replay starts with what is stored.
    const r = cli(["tail", "--replay", "--capability", "write", "--json", "--seed", seed, ...common(tenant)]);
    await r.waitFor(`"taskId":"${write.id}"`);
    r.child.kill("SIGINT");
    expect(await r.exited).toBe(0);
    const replayed = jsonLines(r.stdout());
    expect(new Set(replayed.map((l) => l.taskId))).toEqual(new Set([before.id, write.id]));
    expect(replayed.every((l) => l.capability === "write" && l.verified === false)).toBe(true);
  });

  it("tail --task --json replays one task's events and ends with it; verified only for its submitter", async () => {
    const tenant = "tail-task";
    await startWriter(await open({ tenant, insecureAllowAll: true }), { delayMs: 10 });
    const dir = mkdtempSync(join(tmpdir(), "agentbus-tail-"));
    const me = Identity.generate();
    writeFileSync(join(dir, "me.nk"), me.exportSeed(), { mode: 0o600 });
    const client = await open({ tenant, identity: me });
    const task = await client.submit("write", "tides");
    await task.result();

    const mine = await runCli(["tail", "--task", task.id, "--json", "--seed", join(dir, "me.nk"), ...common(tenant)]);
    expect(mine.code, mine.stderr).toBe(0);
    const lines = jsonLines(mine.stdout);
    expect(lines.every((l) => l.taskId === task.id && l.capability === "write" && l.verified === true)).toBe(true);
    expect(lines.filter((l) => "artifactUpdate" in (l.event as object))).toHaveLength(draft("tides").length);
    expect(lines.at(-1)).toMatchObject({ event: { statusUpdate: { status: { state: "TASK_STATE_COMPLETED" } } } });

    // To an identity without a grant the task does not exist.
    const stranger = await runCli(["tail", "--task", task.id, "--json", ...common(tenant)]);
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toContain(`task ${task.id} not found`);

    // An identity granted the task's capability sees the same events, as claimed, not verified.
    const other = await runCli(["tail", "--task", task.id, "--json", "--seed", (await operator(tenant)).seed, ...common(tenant)]);
    expect(other.code).toBe(0);
    const seen = jsonLines(other.stdout);
    expect(seen.map((l) => l.sequence)).toEqual(lines.map((l) => l.sequence));
    expect(seen.every((l) => l.verified === false && l.from === lines[0]!.from && !("error" in l))).toBe(true);
  });

  it("agent run serves a module's agent definition until Ctrl-C, then withdraws", async () => {
    const tenant = "agent-run";
    const dir = mkdtempSync(join(tmpdir(), "agentbus-run-"));
    const file = join(dir, "upper.mjs");
    writeFileSync(file, `export default {
  spec: { name: "upper", skills: [{ id: "upper" }] },
  handlers: { upper: (ctx) => ctx.text.toUpperCase() },
};\n`);
    const client = await open({ tenant }); // first: it sets up the tenant's buckets (short presence max age)
    const a = cli(["agent", "run", file, "--insecure", "--json", ...common(tenant)]);
    await a.waitFor("\n");
    const hello = JSON.parse(a.stdout()) as { id: string; name: string; capabilities: string[] };
    expect(hello).toMatchObject({ name: "upper", capabilities: ["upper"] });
    expect((await client.call("upper", "shout")).parts).toEqual([{ text: "SHOUT" }]);
    a.child.kill("SIGINT");
    expect(await a.exited).toBe(0);
    await eventually(() => !client.discover({ capability: "upper" }).some((x) => x.online));
  });

  it("agent run runs a module's default function: the writer example, on durable tasks", async () => {
    const tenant = "agent-run-fn";
    const writer = fileURLToPath(new URL("../../agents/writer.ts", import.meta.url));
    const client = await open({ tenant });
    const a = cli(["agent", "run", writer, "--insecure", ...common(tenant)]);
    await a.waitFor("writer (U");
    expect(a.stdout()).toContain("serves write");
    const done = await (await client.submit("write", "kelp")).result({ timeout: 20_000 });
    expect(done.artifacts[0]!.parts.map((p) => p.text).join("")).toBe(draft("kelp").join(""));
    a.child.kill("SIGTERM");
    expect(await a.exited).toBe(0);
  });

  it("agent run refuses a module that defines no agent (exit 2)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "agentbus-run-"));
    writeFileSync(join(dir, "nothing.mjs"), "export const x = 1;\n");
    const r = await runCli(["agent", "run", join(dir, "nothing.mjs"), ...common("agent-run-bad")]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("must export default a function");
    expect((await runCli(["agent", "run", join(dir, "missing.mjs"), ...common("agent-run-bad")])).code).toBe(2);
  });
});
