import { randomUUID } from "node:crypto";
import type { CallOptions } from "./bus.js";
import { AgentBusError } from "./errors.js";
import type { Envelope } from "./envelope.js";
import type { Logger } from "./log.js";
import { structuredInput, textOf, toMessage, type Input } from "./message.js";
import type { Message, Part } from "./protocol.js";
import type { Session } from "./session.js";
import type { Task, TaskState } from "./task.js";
import type { SubmitOptions, TaskHandle } from "./tasks.js";

/** Options of {@link AgentContext.artifact}. */
export interface ArtifactOptions {
  /** Same id + `append` adds parts to an artifact sent before. Default: a new id per call. */
  artifactId?: string;
  name?: string;
  description?: string;
  append?: boolean;
  lastChunk?: boolean;
  metadata?: Record<string, unknown>;
}

/**
 * What a handler gets, whether it runs as a fast call or as a durable task.
 * In a fast call, artifacts and messages are collected into the reply,
 * `status()` is a no-op and `inputRequired()` is refused (it needs a task).
 */
export interface AgentContext {
  capability: string;
  /** The message that started this turn. */
  userMessage: Message;
  /** The input the schema applies to: first data part, else `{ text }`. */
  input: unknown;
  /** Text parts of the user message, joined. */
  text: string;
  /** The caller's verified identity. */
  from: string;
  envelope: Envelope;
  /** The task snapshot when running as a durable task; undefined for a fast call. */
  task?: Task;
  taskId?: string;
  contextId?: string;
  /** Earlier messages of the task (multi-turn), oldest first; empty for a fast call. */
  history: Message[];
  /** Aborted on cancel, or when the agent stops and the drain timeout passes. */
  signal: AbortSignal;
  log: Logger;
  /** Shared state of this context (A2A contextId), optimistic concurrency. */
  session<T extends Record<string, unknown> = Record<string, unknown>>(): Promise<Session<T>>;
  /** Fast call to another capability, carrying task, parent, depth and trace. */
  call(cap: string, input: Input, options?: CallOptions): Promise<Message>;
  /** Durable task on another capability, carrying context, parent, depth and trace. */
  submit(cap: string, input: Input, options?: SubmitOptions): Promise<TaskHandle>;
  /** A WORKING status update with a message. */
  status(update: Input): Promise<void>;
  /** An artifact (or a chunk of one, with `append` / `lastChunk`). */
  artifact(content: Input, options?: ArtifactOptions): Promise<void>;
  /** A message from the agent. */
  message(content: Input): Promise<void>;
  /** Asks the caller for more input: the task waits in INPUT_REQUIRED; return after calling it. */
  inputRequired(question?: Input): Promise<void>;
  /** Ends the task COMPLETED (returning a value does the same). */
  complete(result?: Input): Promise<void>;
  /** Ends the task FAILED with a reason. */
  fail(reason: string): Promise<void>;
  /** Ends the task REJECTED (the agent will not do it). */
  reject(reason: string): Promise<void>;
  /** Tells the bus the handler is still busy (keeps a long task's work item from redelivery). */
  working(): void;
}

/** How a context's outputs are delivered: into a reply, or as task events. */
export interface ContextSink {
  status(message: Message): Promise<void>;
  artifact(parts: Part[], options: ArtifactOptions & { artifactId: string }): Promise<void>;
  message(message: Message): Promise<void>;
  /** Ends the turn in `state` with an optional agent message. */
  end(state: TaskState, message?: Message): Promise<void>;
  working(): void;
}

/** The inputs shared by both kinds of context. */
export interface ContextBase {
  capability: string;
  userMessage: Message;
  envelope: Envelope;
  task?: Task;
  signal: AbortSignal;
  log: () => Logger;
  session: <T extends Record<string, unknown>>(contextId: string) => Promise<Session<T>>;
  call: AgentContext["call"];
  submit: AgentContext["submit"];
  /** A validated structured input, when the capability has a schema. */
  input?: unknown;
}

const agentMessage = (content: Input): Message => toMessage(content, "ROLE_AGENT");

/**
 * Ends a turn COMPLETED; a result (a handler's return value, or
 * `complete(result)`) becomes the task's `result` artifact first.
 */
export async function completeWith(sink: ContextSink, result: Input | void): Promise<void> {
  const parts = result === undefined ? [] : agentMessage(result).parts;
  if (parts.length > 0) await sink.artifact(parts, { artifactId: randomUUID(), name: "result", lastChunk: true });
  await sink.end("TASK_STATE_COMPLETED");
}

/** The sink behind a context, for adapters inside core that need exact A2A events. */
export const SINK = Symbol("agentbus.sink");

/** Builds a handler context over `sink`. */
export function createContext(base: ContextBase, sink: ContextSink): AgentContext & { [SINK]: ContextSink } {
  const contextId = base.task?.contextId ?? base.userMessage.contextId ?? base.envelope.context;
  let log: Logger | undefined;
  return {
    [SINK]: sink,
    capability: base.capability,
    userMessage: base.userMessage,
    get input() {
      return base.input ?? structuredInput(base.userMessage);
    },
    get text() {
      return textOf(base.userMessage);
    },
    from: base.envelope.from,
    envelope: base.envelope,
    task: base.task,
    taskId: base.task?.id,
    contextId,
    history: base.task?.history ?? [],
    signal: base.signal,
    // Built on first use: a pino child per call would cost on the hot path.
    get log() {
      return (log ??= base.log());
    },
    session: <T extends Record<string, unknown>>() => {
      if (!contextId) return Promise.reject(new AgentBusError("INVALID_INPUT", "no contextId: sessions belong to an A2A context"));
      return base.session<T>(contextId);
    },
    call: base.call,
    submit: base.submit,
    status: (update) => sink.status(agentMessage(update)),
    artifact: (content, options = {}) => sink.artifact(agentMessage(content).parts, { ...options, artifactId: options.artifactId ?? randomUUID() }),
    message: (content) => sink.message(agentMessage(content)),
    inputRequired: (question) => sink.end("TASK_STATE_INPUT_REQUIRED", question === undefined ? undefined : agentMessage(question)),
    complete: (result) => completeWith(sink, result),
    fail: (reason) => sink.end("TASK_STATE_FAILED", agentMessage(reason)),
    reject: (reason) => sink.end("TASK_STATE_REJECTED", agentMessage(reason)),
    working: () => sink.working(),
  };
}
