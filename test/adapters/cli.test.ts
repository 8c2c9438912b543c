import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { textOf, type Task, type TaskArtifactUpdateEvent, type TaskEvent } from "../../core/index.js";
import { serveCommand } from "../../adapters/cli/index.js";
import { startCoder } from "../../agents/coder.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

const node = process.execPath;
const reason = (t: Task) => (t.status.message ? textOf(t.status.message) : "");
/** The text of one named artifact of a task. */
const output = (t: Task, name: string) => t.artifacts.filter((a) => a.name === name).flatMap((a) => a.parts.map((p) => p.text ?? "")).join("");
const chunksOf = (events: TaskEvent[], name: string) =>
  events.flatMap((e) => ("artifactUpdate" in e && e.artifactUpdate.artifact.name === name ? [e.artifactUpdate] : [])) as TaskArtifactUpdateEvent[];

/** True while `pid` runs (a zombie waiting for its parent counts as gone). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "agentbus-cli-test-"));
  dirs.push(dir);
  return dir;
}

describe("command-line agent adapter", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("streams stdout lines as chunks of one artifact, in order, while the program runs; stderr as its own artifact", async () => {
    const marker = join(await tempDir(), "go-on");
    // Prints two lines, then waits until the test has seen them on the bus.
    const script = `
      console.log("line 1"); console.log("line 2"); console.error("warning: careful");
      const t = setInterval(() => {
        if (!require("node:fs").existsSync(process.env.MARKER)) return;
        clearInterval(t); console.log("line 3"); process.stdout.write("no newline at the end");
      }, 20);`;
    await serveCommand(await open({ tenant: "cli-stream", insecureAllowAll: true }), { capability: "lines", command: node, args: ["-e", script], env: { MARKER: marker } });
    const client = await open({ tenant: "cli-stream" });
    const handle = await client.submit("lines", "go");
    const events: TaskEvent[] = [];
    for await (const { event } of handle.events()) {
      events.push(event);
      if (!existsSync(marker) && chunksOf(events, "stdout").map((c) => c.artifact.parts[0]!.text).join("") === "line 1\nline 2\n") await writeFile(marker, "");
    }
    expect(existsSync(marker)).toBe(true); // only reachable if the first lines streamed before the program ended
    const stdout = chunksOf(events, "stdout");
    expect(stdout.map((c) => c.artifact.parts[0]!.text).join("")).toBe("line 1\nline 2\nline 3\nno newline at the end");
    expect(new Set(stdout.map((c) => c.artifact.artifactId)).size).toBe(1);
    expect(stdout.map((c) => c.append)).toEqual([false, ...stdout.slice(1).map(() => true)]);
    expect(stdout.map((c) => c.lastChunk)).toEqual([...stdout.slice(1).map(() => false), true]);
    expect(stdout.at(-1)!.artifact.parts[0]!.text).toBe("no newline at the end");
    expect(stdout.length).toBeGreaterThanOrEqual(3);

    const task = await handle.get();
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(output(task, "stdout")).toBe("line 1\nline 2\nline 3\nno newline at the end");
    expect(output(task, "stderr")).toBe("warning: careful\n");
    expect(task.artifacts.map((a) => a.name).sort()).toEqual(["stderr", "stdout"]);
  }, 60_000);

  it("gives the input on stdin or as one argument, never through a shell; a fast call replies with stdout", async () => {
    const client = await open({ tenant: "cli-input" });
    await serveCommand(await open({ tenant: "cli-input", insecureAllowAll: true }), { capability: "cat", command: node, args: ["-e", "process.stdin.pipe(process.stdout)"], input: "stdin" });
    const cwd = await tempDir();
    await serveCommand(await open({ tenant: "cli-input", insecureAllowAll: true }), {
      capability: "argv",
      command: node,
      args: ["-e", "console.log(JSON.stringify(process.argv.slice(1)))", "--"],
      input: "arg",
      cwd,
    });

    const piped = await (await client.submit("cat", "hello from stdin\nsecond line")).result({ timeout: 15_000 });
    expect(piped.status.state).toBe("TASK_STATE_COMPLETED");
    expect(output(piped, "stdout")).toBe("hello from stdin\nsecond line");
    const data = await (await client.submit("cat", { a: 1, b: [true] })).result({ timeout: 15_000 });
    expect(output(data, "stdout")).toBe('{"a":1,"b":[true]}');

    const hostile = `$(touch pwned) "quoted" \`touch pwned2\`; touch pwned3`;
    const argv = await (await client.submit("argv", hostile)).result({ timeout: 15_000 });
    expect(argv.status.state).toBe("TASK_STATE_COMPLETED");
    expect(JSON.parse(output(argv, "stdout"))).toEqual([hostile]);
    expect(["pwned", "pwned2", "pwned3"].filter((f) => existsSync(join(cwd, f)))).toEqual([]);

    await eventually(() => client.discover({ capability: "cat", online: true }).length === 1);
    expect(textOf(await client.call("cat", "over a fast call", { timeout: 10_000 }))).toBe("over a fast call");
  }, 60_000);

  it("runs each task in its own working directory, with the task in its environment", async () => {
    const base = await tempDir();
    await serveCommand(await open({ tenant: "cli-cwd", insecureAllowAll: true }), {
      capability: "where",
      command: node,
      args: ["-e", "console.log(process.cwd()); console.log(process.env.AGENTBUS_TASK_ID); console.log(process.env.AGENTBUS_CAPABILITY)"],
      input: "none",
      cwd: async (ctx) => {
        const dir = join(base, ctx.taskId!);
        await mkdir(dir);
        return dir;
      },
    });
    const client = await open({ tenant: "cli-cwd" });
    const [a, b] = await Promise.all([client.submit("where", "a"), client.submit("where", "b")]);
    for (const h of [a, b]) {
      const done = await h.result({ timeout: 15_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      expect(output(done, "stdout")).toBe(`${join(base, h.id)}\n${h.id}\nwhere\n`);
    }
  }, 60_000);

  it("a non-zero exit FAILS the task with the code and the last stderr lines; a missing program FAILS at once", async () => {
    const client = await open({ tenant: "cli-exit" });
    await serveCommand(await open({ tenant: "cli-exit", insecureAllowAll: true }), {
      capability: "broken",
      command: node,
      args: ["-e", "console.log('trying'); for (let i = 1; i <= 15; i++) console.error('problem ' + i); process.exit(3)"],
      stderrLines: 3,
    });
    const failed = await (await client.submit("broken", "x")).result({ timeout: 15_000 });
    expect(failed.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(failed)).toBe(`${node} exited with code 3; stderr: problem 13 | problem 14 | problem 15`);
    expect(output(failed, "stdout")).toBe("trying\n");
    expect(output(failed, "stderr").split("\n")).toHaveLength(16);

    await serveCommand(await open({ tenant: "cli-exit", insecureAllowAll: true }), { capability: "missing", command: "agentbus-no-such-program" });
    const missing = await (await client.submit("missing", "x")).result({ timeout: 15_000 });
    expect(missing.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(missing)).toBe("cannot start agentbus-no-such-program: ENOENT");
  }, 60_000);

  it("cancel kills the program and what it started (SIGTERM to its process group); the task ends CANCELED", async () => {
    const adapter = await serveCommand(await open({ tenant: "cli-cancel", insecureAllowAll: true }), {
      capability: "sleepy",
      command: "sh",
      args: ["-c", "sleep 60 & echo $$ $!; wait"],
      input: "none",
    });
    const client = await open({ tenant: "cli-cancel" });
    const handle = await client.submit("sleepy", "x");
    const line = await eventually(async () => output(await handle.get(), "stdout"));
    const pids = line.trim().split(" ").map(Number);
    expect(pids).toHaveLength(2);
    expect(pids.every(alive)).toBe(true);
    expect([...adapter.running]).toEqual([pids[0]]);
    const canceled = await handle.cancel();
    expect(canceled.status.state).toBe("TASK_STATE_CANCELED");
    await eventually(() => !pids.some(alive), 5000);
    expect(adapter.running.size).toBe(0);
  }, 30_000);

  it("a program that ignores SIGTERM is killed with SIGKILL after the grace period", async () => {
    await serveCommand(await open({ tenant: "cli-stubborn", insecureAllowAll: true }), {
      capability: "stubborn",
      command: node,
      args: ["-e", "process.on('SIGTERM', () => console.log('ignoring SIGTERM')); console.log(process.pid); setInterval(() => {}, 1000)"],
      killGraceMs: 500,
    });
    const client = await open({ tenant: "cli-stubborn" });
    const handle = await client.submit("stubborn", "x");
    const pid = Number(await eventually(async () => output(await handle.get(), "stdout").trim()));
    const started = Date.now();
    const canceled = await handle.cancel();
    expect(canceled.status.state).toBe("TASK_STATE_CANCELED");
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    expect(alive(pid)).toBe(false);
    expect(output(canceled, "stdout")).toBe(`${pid}\nignoring SIGTERM\n`);
  }, 30_000);

  it("a program past its timeout is killed and the task FAILS with the limit in the reason", async () => {
    await serveCommand(await open({ tenant: "cli-timeout", insecureAllowAll: true }), {
      capability: "slow",
      command: node,
      args: ["-e", "console.log(process.pid); console.error('still thinking'); setInterval(() => {}, 1000)"],
      timeoutMs: 500,
    });
    const client = await open({ tenant: "cli-timeout" });
    const failed = await (await client.submit("slow", "x")).result({ timeout: 15_000 });
    expect(failed.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(failed)).toBe(`${node} timed out after 500 ms and was killed; stderr: still thinking`);
    expect(alive(Number(output(failed, "stdout").trim()))).toBe(false);
  }, 30_000);
});

describe("agents/coder.ts", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("its default command runs in the working directory and streams the request and a listing", async () => {
    const workdir = await tempDir();
    await writeFile(join(workdir, "hello.txt"), "hi");
    await startCoder(await open({ tenant: "coder", insecureAllowAll: true }), { workdir });
    const client = await open({ tenant: "coder" });
    const handle = await client.submit("code", "add a README");
    const events: TaskEvent[] = [];
    for await (const { event } of handle.events()) events.push(event);
    const chunks = chunksOf(events, "stdout");
    expect(chunks.length).toBeGreaterThanOrEqual(1);
    expect(chunks.at(-1)!.lastChunk).toBe(true);
    const task = await handle.get();
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    const text = output(task, "stdout");
    expect(text).toContain("request: add a README\n");
    expect(text).toContain(`working directory: ${workdir}\n`);
    expect(text).toContain("  hello.txt\n");
  }, 30_000);

  it("runs standalone: `tsx agents/coder.ts` serves `code`, one directory per conversation", async () => {
    const file = fileURLToPath(new URL("../../agents/coder.ts", import.meta.url));
    const child = spawn(node, ["--import", "tsx", file], {
      env: { ...process.env, NATS_URL: nats.server.url, AGENTBUS_TENANT: "coder-standalone", AGENTBUS_INSECURE: "1", AGENTBUS_CODER_COMMAND: "", AGENTBUS_CODER_WORKDIR: "" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr += String(d)));
    try {
      const client = await open({ tenant: "coder-standalone" });
      await eventually(() => client.discover({ capability: "code", online: true }).length === 1, 20_000).catch((err: unknown) => {
        throw new Error(`${String(err)}; coder stderr: ${stderr}`);
      });
      const done = await (await client.submit("code", "hello", { contextId: "conversation-1" })).result({ timeout: 15_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      const text = output(done, "stdout");
      expect(text).toContain("request: hello\n");
      expect(text).toMatch(new RegExp(`working directory: ${join(tmpdir(), "agentbus-coder")}/[0-9a-f]{16}\\n`));
    } finally {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
  }, 60_000);
});
