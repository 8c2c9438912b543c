/**
 * agentbus/testing: run a handler against a recording context, without
 * NATS. The handler gets the same context it gets on the bus (the same
 * class, the same result and error rules); what it reports — status
 * updates, artifacts, messages, the final state — is folded into a task as
 * the worker folds it, and calls to other capabilities are answered by the
 * functions given (or refused `NO_RESPONDERS`, as on a bus where nothing
 * serves them).
 *
 * @example
 * ```ts
 * import { testHandler } from "agentbus-nats/testing";
 * const run = await testHandler((ctx) => `hello, ${ctx.text}`, "Ada");
 * run.state;     // "TASK_STATE_COMPLETED"
 * run.resultText; // "hello, Ada"
 * ```
 */
import { randomUUID } from "node:crypto";
import { CallSink } from "./agent/agent.js";
import { completeWith, runHandler, type ArtifactOptions, type ContextBase, type ContextSink, type Handler } from "./agent/context.js";
import type { Envelope } from "./security/envelope.js";
import { AgentBusError, failureReason, isAgentBusError } from "./wire/errors.js";
import { createLogger, type Logger } from "./wire/log.js";
import { textOf, toMessage, type Input } from "./wire/message.js";
import type { CallOptions } from "./options.js";
import type { Message, Part } from "./wire/protocol.js";
import { applyEvent, artifactEvent, statusEvent, statusNow, type Task, type TaskEvent, type TaskState } from "./wire/task.js";

/** Options of {@link testHandler}. */
export interface HandlerTestOptions {
  /** The capability the handler serves (default `"test"`). */
  capability?: string;
  /**
   * `"task"` (default): as a durable task, every report recorded as a task
   * event. `"call"`: as a fast call, artifacts and messages collected into
   * the reply, `status()` ignored, `inputRequired()` refused.
   */
  mode?: "task" | "call";
  /** The caller's identity, as `ctx.from` (default `"UTESTCALLER"`). */
  from?: string;
  /** Behind a bridge: the caller the submitter acted for (`ctx.caller`). */
  caller?: string;
  /** A2A context id (default: a new UUID). */
  contextId?: string;
  /** Earlier turns of the task, oldest first (`ctx.history` before this turn's message). */
  history?: Message[];
  /** A validated structured input (`ctx.input`), as a capability with a schema passes it. */
  input?: unknown;
  /**
   * Answers to `ctx.call(cap, …)`, per capability. A capability not listed
   * is refused `NO_RESPONDERS`. A function that throws makes the call
   * reject with that error.
   */
  calls?: Record<string, (input: Message, options: CallOptions) => Input | Promise<Input>>;
  /** Aborts `ctx.signal` (a cancel, or the agent stopping). */
  signal?: AbortSignal;
  /** Where `ctx.log` writes (default: a silent logger). */
  logger?: Logger;
}

/** What one {@link testHandler} run did. */
export interface HandlerTestRun {
  /** The final state: COMPLETED, FAILED, REJECTED, CANCELED, INPUT_REQUIRED or AUTH_REQUIRED. */
  state: TaskState;
  /** The task at the end, as the submitter would read it (status, history, artifacts). */
  task: Task;
  /** Every event in order (task mode; empty for a fast call). */
  events: TaskEvent[];
  /** Text of the `result` artifact (task mode) or of the reply (call mode); undefined when there is none. */
  resultText?: string;
  /** A fast call's reply (call mode, COMPLETED only). */
  reply?: Message;
  /** Every `ctx.call` the handler made, in order. */
  calls: Array<{ capability: string; input: Message; options: CallOptions }>;
  /** The error the handler threw, when it threw (the task then FAILED with its message). */
  error?: unknown;
}

/** A durable task's reports, folded as the worker folds them. */
class RecordingSink implements ContextSink {
  readonly events: TaskEvent[] = [];
  ended = false;

  constructor(public task: Task) {}

  #emit(event: TaskEvent): void {
    if (this.ended) throw new AgentBusError("TASK_FINISHED", `task ${this.task.id} already ended`);
    this.events.push(event);
    this.task = applyEvent(this.task, event);
  }

  async status(message: Message): Promise<void> {
    this.#emit(statusEvent(this.task, "TASK_STATE_WORKING", message));
  }

  async artifact(parts: Part[], o: ArtifactOptions & { artifactId: string }): Promise<void> {
    this.#emit(artifactEvent(this.task, parts, o));
  }

  async message(message: Message): Promise<void> {
    this.#emit({ message });
  }

  async end(state: TaskState, message?: Message): Promise<void> {
    if (this.ended) return;
    this.#emit(statusEvent(this.task, state, message));
    this.ended = true;
  }

  working(): void {}
}


/**
 * Runs `handler` once on `input` against a recording context (see the
 * module comment): no NATS, no bus. `ctx.session()` and `ctx.submit()` need
 * a bus and are refused `UNAVAILABLE`. A handler that throws ends the task
 * FAILED with the error's message (the worker would first retry it), and
 * `error` holds what it threw.
 */
export async function testHandler(handler: Handler, input: Input, options: HandlerTestOptions = {}): Promise<HandlerTestRun> {
  const capability = options.capability ?? "test";
  const contextId = options.contextId ?? randomUUID();
  const userMessage = { ...toMessage(input), contextId };
  const from = options.from ?? "UTESTCALLER";
  const calls: HandlerTestRun["calls"] = [];
  const envelope: Envelope = { from, ts: Date.now(), id: randomUUID(), depth: 0, auth: "signature", context: contextId };
  const logger = options.logger ?? createLogger({ level: "silent" });
  const task: Task = {
    id: randomUUID(),
    contextId,
    status: statusNow("TASK_STATE_WORKING"),
    artifacts: [],
    history: [...(options.history ?? []), userMessage],
    metadata: { capability, submitter: from, ...(options.caller !== undefined && { caller: options.caller }) },
  };
  const unavailable = (what: string) => () => Promise.reject(new AgentBusError("UNAVAILABLE", `${what} needs a bus: not available in testHandler`));
  const call: ContextBase["call"] = async (cap, callInput, callOptions = {}) => {
    const message = toMessage(callInput);
    calls.push({ capability: cap, input: message, options: callOptions });
    const answer = options.calls?.[cap];
    if (!answer) throw new AgentBusError("NO_RESPONDERS", `no agent serves ${cap}`);
    return toMessage(await answer(message, callOptions), "ROLE_AGENT");
  };
  const durable = (options.mode ?? "task") === "task";
  const base: ContextBase = {
    capability,
    userMessage,
    envelope,
    task: durable ? task : undefined,
    signal: options.signal ?? new AbortController().signal,
    log: () => logger,
    session: unavailable("ctx.session()"),
    call,
    submit: unavailable("ctx.submit()"),
    input: options.input,
  };

  if (!durable) {
    const sink = new CallSink();
    try {
      const result = await runHandler(handler, base, sink, "UTESTAGENT");
      if (!sink.done) await completeWith(sink, result);
      const reply: Message = { messageId: randomUUID(), role: "ROLE_AGENT", parts: sink.parts, contextId };
      const done = { ...task, status: statusNow("TASK_STATE_COMPLETED") };
      return { state: "TASK_STATE_COMPLETED", task: done, events: [], reply, resultText: textOf(reply), calls };
    } catch (error) {
      const state: TaskState = isAgentBusError(error, "HANDLER_FAILED") && error.message.startsWith("rejected: ") ? "TASK_STATE_REJECTED" : "TASK_STATE_FAILED";
      return { state, task: { ...task, status: statusNow(state, toMessage(failureReason(error), "ROLE_AGENT")) }, events: [], calls, error };
    }
  }

  const sink = new RecordingSink(task);
  let error: unknown;
  try {
    const result = await runHandler(handler, base, sink, "UTESTAGENT");
    if (base.signal.aborted && !sink.ended) await sink.end("TASK_STATE_CANCELED", toMessage("canceled", "ROLE_AGENT"));
    else if (!sink.ended) await completeWith(sink, result);
  } catch (err) {
    error = err;
    if (!sink.ended) await sink.end(base.signal.aborted ? "TASK_STATE_CANCELED" : "TASK_STATE_FAILED", toMessage(failureReason(err), "ROLE_AGENT"));
  }
  const final = sink.task;
  const result = final.artifacts.find((a) => a.name === "result");
  return {
    state: final.status.state,
    task: final,
    events: sink.events,
    resultText: result ? result.parts.flatMap((p) => (typeof p.text === "string" ? [p.text] : [])).join("\n") : undefined,
    calls,
    ...(error !== undefined && { error }),
  };
}

