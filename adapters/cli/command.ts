import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { AgentBusError, dataOf, type Agent, type AgentContext, type AgentSpec, type Bus, type Handler, type WorkerOptions } from "../../core/index.js";

/** Options of {@link serveCommand}. */
export interface CommandAdapterOptions {
  /** The capability served (`[a-z0-9_-]+` tokens joined by dots). */
  capability: string;
  /** The program to run, found on `PATH` or given as a path. Never run through a shell. */
  command: string;
  /** Its arguments, passed as they are (no shell: no quoting, globbing or expansion). */
  args?: string[];
  /**
   * How the task's input reaches the program: `"stdin"` (default, then
   * stdin is closed), `"arg"` (appended as the last argument; stdin is
   * empty) or `"none"`. The input is the message's text, or, when it has
   * none, its first data part as JSON (see `inputText`).
   */
  input?: "stdin" | "arg" | "none";
  /** Turns a task into the program's input text (default: text parts, else the first data part as JSON). */
  inputText?: (ctx: AgentContext) => string;
  /**
   * Working directory: a path, or a function of the task that returns one
   * (e.g. a fresh directory per task or per A2A context). Default: this
   * process's working directory.
   */
  cwd?: string | ((ctx: AgentContext) => string | Promise<string>);
  /** Extra environment variables (`undefined` removes one). */
  env?: Record<string, string | undefined>;
  /** Start from this process's environment (default true); false: only `env` and the `AGENTBUS_*` task variables (plus `PATH`). */
  inheritEnv?: boolean;
  /** Kill the program after this long, ms (default 600 000; 0: no limit). The task FAILS. */
  timeoutMs?: number;
  /** After SIGTERM (cancel, timeout, agent stop), wait this long before SIGKILL, ms (default 5000). */
  killGraceMs?: number;
  /** Last stderr lines quoted in a failure reason (default 10). */
  stderrLines?: number;
  /**
   * The agent's card: name (default: the capability), description, version,
   * skills (default one skill, `capability`). Every skill runs the same
   * command; `AGENTBUS_CAPABILITY` says which one was called.
   */
  spec?: Partial<AgentSpec>;
  /** Durable-task settings of the agent (concurrency, ack wait). */
  tasks?: WorkerOptions;
}

/** A command-line program serving a capability on the bus. */
export interface CommandAgent {
  agent: Agent;
  /** Process ids of the programs running now. */
  readonly running: ReadonlySet<number>;
  /** Stops the agent: running tasks drain, then their programs are killed. */
  stop(): Promise<void>;
}

/** Largest output kept for a fast call's reply, per stream. */
const MAX_REPLY_CHARS = 512 * 1024;
/** How long to wait for stdout/stderr to close after the program exits (a background child may hold them). */
const PIPE_GRACE_MS = 1000;

/** Programs running in this process, killed if it exits. */
const live = new Set<ChildProcess>();
let exitHook = false;

/**
 * Serves a capability with a command-line program, one process per task
 * (the OpenCode-bridge pattern: a coding agent run per request).
 *
 * **Input.** The program gets the task's input on stdin or as its last
 * argument (`input`), never through a shell. Its environment carries
 * `AGENTBUS_CAPABILITY`, `AGENTBUS_CALLER` (the caller's verified bus
 * identity) and, for durable tasks, `AGENTBUS_TASK_ID` and `AGENTBUS_CONTEXT_ID`.
 *
 * **Output.** stdout and stderr stream as they arrive, each as one artifact
 * (named `stdout` / `stderr`) in chunks of whole lines: the first chunk
 * creates the artifact, later ones `append`, and a closing chunk with
 * `lastChunk: true` carries any unterminated last line (else it is empty).
 * Joining a stream's chunks gives the output exactly. Lines that arrive
 * while the previous chunk is being stored are sent together, so a chatty
 * program does not produce one event per line. In a fast call (`bus.call`)
 * the reply is the whole stdout as one text part.
 *
 * **End.** Exit code 0: COMPLETED. Another code: FAILED, the reason names
 * the code and quotes the last stderr lines. Killed by a signal: FAILED.
 * Cancel, timeout and agent stop send SIGTERM to the program's process
 * group (its children too), then SIGKILL after `killGraceMs`; a canceled
 * task ends CANCELED once the program is gone, a timed-out one FAILED.
 *
 * @example
 * ```ts
 * const bus = await connect({ tenant: "acme" });
 * await serveCommand(bus, { capability: "wc", command: "wc", args: ["-w"], input: "stdin", timeoutMs: 10_000 });
 * ```
 */
export async function serveCommand(bus: Bus, options: CommandAdapterOptions): Promise<CommandAgent> {
  if (!options.command) throw new AgentBusError("INVALID_INPUT", "no command to run");
  const running = new Set<number>();
  const handler: Handler = (ctx) => runCommand(ctx, options, running);
  const skills = options.spec?.skills ?? [{ id: options.capability, description: `Runs ${[options.command, ...(options.args ?? [])].join(" ")}` }];
  if (!skills.some((s) => s.id === options.capability)) throw new AgentBusError("INVALID_INPUT", `spec.skills does not include ${options.capability}`);
  if (!exitHook) {
    exitHook = true;
    // A program must not outlive the agent that ran it.
    process.on("exit", () => {
      for (const child of live) signalGroup(child, "SIGKILL");
    });
  }
  const agent = await bus.agent(
    { ...options.spec, name: options.spec?.name ?? options.capability, skills },
    Object.fromEntries(skills.map((s) => [s.id, handler])),
    { tasks: options.tasks },
  );
  return { agent, running, stop: () => agent.stop() };
}

/** The default input: the text parts, else the first data part as JSON. */
function defaultInputText(ctx: AgentContext): string {
  if (ctx.text) return ctx.text;
  const data = dataOf(ctx.userMessage);
  return data === undefined ? "" : JSON.stringify(data);
}

/** Runs the program for one task; resolves once it has exited and its output is stored. */
async function runCommand(ctx: AgentContext, o: CommandAdapterOptions, running: Set<number>): Promise<string | void> {
  const mode = o.input ?? "stdin";
  const text = mode === "none" ? "" : (o.inputText ?? defaultInputText)(ctx);
  const cwd = typeof o.cwd === "function" ? await o.cwd(ctx) : o.cwd;
  const env: Record<string, string | undefined> = {
    ...(o.inheritEnv === false ? { PATH: process.env.PATH } : process.env),
    ...o.env,
    AGENTBUS_CAPABILITY: ctx.capability,
    AGENTBUS_CALLER: ctx.from,
    AGENTBUS_TASK_ID: ctx.taskId,
    AGENTBUS_CONTEXT_ID: ctx.contextId,
  };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const args = mode === "arg" ? [...(o.args ?? []), text] : (o.args ?? []);
  const label = o.command;
  if (ctx.signal.aborted) return;

  const child = spawn(o.command, args, {
    cwd,
    env,
    stdio: [mode === "stdin" ? "pipe" : "ignore", "pipe", "pipe"],
    // Its own process group, so a kill reaches whatever it started too.
    detached: process.platform !== "win32",
    windowsHide: true,
  });
  const spawned = new Promise<Error | undefined>((resolve) => {
    child.once("spawn", () => resolve(undefined));
    child.once("error", (err) => resolve(err));
  });
  const spawnError = await spawned;
  if (spawnError) return ctx.fail(`cannot start ${label}${cwd ? ` in ${cwd}` : ""}: ${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message}`);
  live.add(child);
  running.add(child.pid!);
  ctx.log.debug({ pid: child.pid, command: label, cwd }, "command started");

  if (child.stdin) {
    child.stdin.on("error", () => {}); // EPIPE: the program did not read its input
    child.stdin.end(text);
  }

  const streaming = ctx.task !== undefined; // a fast call gets one reply: collect stdout
  const stdout = new Chunks(ctx, "stdout", streaming);
  const stderr = new Chunks(ctx, "stderr", streaming, o.stderrLines ?? 10);
  child.stdout!.setEncoding("utf8").on("data", (d: string) => stdout.push(d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => stderr.push(d));

  // Stop: SIGTERM to the group, SIGKILL after the grace period.
  let stoppedBy: "cancel" | "timeout" | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const stop = (why: "cancel" | "timeout") => {
    if (stoppedBy || child.exitCode !== null || child.signalCode !== null) return;
    stoppedBy = why;
    signalGroup(child, "SIGTERM");
    killTimer = setTimeout(() => signalGroup(child, "SIGKILL"), o.killGraceMs ?? 5000);
  };
  const onAbort = () => stop("cancel");
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  if (ctx.signal.aborted) onAbort(); // canceled while it was starting
  const timeoutMs = o.timeoutMs ?? 600_000;
  const timeout = timeoutMs > 0 ? setTimeout(() => stop("timeout"), timeoutMs) : undefined;

  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
  try {
    const { code, signal } = await exit;
    // Stragglers of a stopped program go with it.
    if (stoppedBy) signalGroup(child, "SIGKILL");
    // The pipes close when every holder is gone; a background child may keep them open.
    const pipes = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), PIPE_GRACE_MS).unref())]);
    if (!pipes) {
      child.stdout!.destroy();
      child.stderr!.destroy();
    }
    await Promise.all([stdout.end(), stderr.end()]);
    ctx.log.debug({ pid: child.pid, code, signal, stoppedBy }, "command exited");

    if (stoppedBy === "cancel" || ctx.signal.aborted) return; // the bus ends the task CANCELED (or hands it on at stop)
    const tail = stderr.tail();
    const quoted = tail ? `; stderr: ${tail}` : "";
    if (stoppedBy === "timeout") return ctx.fail(`${label} timed out after ${timeoutMs} ms and was killed${quoted}`);
    if (code === 0) return streaming ? undefined : stdout.collected();
    if (code !== null) return ctx.fail(`${label} exited with code ${code}${quoted}`);
    return ctx.fail(`${label} was killed by ${signal}${quoted}`);
  } finally {
    clearTimeout(timeout);
    clearTimeout(killTimer);
    ctx.signal.removeEventListener("abort", onAbort);
    live.delete(child);
    running.delete(child.pid!);
  }
}

/** Sends `signal` to the program's process group (its own process where there are no groups). */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    if (process.platform === "win32") child.kill(signal);
    else process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

/**
 * One output stream of the program as chunks of one artifact: whole lines,
 * sent in order, one store at a time; what arrives meanwhile is batched.
 */
class Chunks {
  readonly #artifactId = randomUUID();
  #partial = "";
  #queued = "";
  #sent = 0;
  #sending?: Promise<void>;
  #error?: unknown;
  #collected = "";
  #truncated = false;
  #tail: string[] = [];

  constructor(
    private readonly ctx: AgentContext,
    private readonly name: string,
    private readonly live: boolean,
    private readonly tailLines = 0,
  ) {}

  push(data: string): void {
    const text = this.#partial + data;
    const cut = text.lastIndexOf("\n") + 1;
    this.#partial = text.slice(cut);
    if (cut === 0) return;
    this.#lines(text.slice(0, cut));
  }

  #lines(lines: string): void {
    this.#remember(lines);
    if (!this.live) return this.#collect(lines);
    this.#queued += lines;
    this.#sending ??= this.#pump();
  }

  #remember(lines: string): void {
    if (this.tailLines === 0) return;
    for (const line of lines.split("\n")) if (line.trim()) this.#tail.push(line.trimEnd());
    this.#tail.splice(0, Math.max(0, this.#tail.length - this.tailLines));
  }

  #collect(text: string): void {
    if (this.#collected.length + text.length <= MAX_REPLY_CHARS) this.#collected += text;
    else this.#truncated = true;
  }

  async #pump(): Promise<void> {
    while (this.#queued && this.#error === undefined) {
      const text = this.#queued;
      this.#queued = "";
      try {
        await this.ctx.artifact([{ text }], { artifactId: this.#artifactId, name: this.name, append: this.#sent > 0, lastChunk: false });
        this.#sent++;
      } catch (err) {
        this.#error = err; // e.g. the task ended elsewhere: its signal aborts and the program is stopped
      }
    }
    this.#sending = undefined;
  }

  /** Sends what is queued, then the closing chunk with the unterminated last line; throws if storing a chunk failed. */
  async end(): Promise<void> {
    const rest = this.#partial;
    this.#partial = "";
    this.#remember(rest);
    if (!this.live) return this.#collect(rest);
    while (this.#sending) await this.#sending;
    if (this.#error !== undefined) throw this.#error;
    if (this.#sent === 0 && !rest) return; // no output, no artifact
    await this.ctx.artifact([{ text: rest }], { artifactId: this.#artifactId, name: this.name, append: this.#sent > 0, lastChunk: true });
  }

  /** The last stderr lines, on one line. */
  tail(): string {
    return this.#tail.join(" | ");
  }

  /** Everything (up to the reply limit) of a fast call. */
  collected(): string {
    return this.#truncated ? `${this.#collected}\n[output truncated at ${MAX_REPLY_CHARS} characters]` : this.#collected;
  }
}
