import { randomUUID } from "node:crypto";
import { context as otelContext, trace, type Context, type Span } from "@opentelemetry/api";
import type { CallOptions } from "../options.js";
import { AgentBusError } from "../wire/errors.js";
import type { Envelope } from "../security/envelope.js";
import type { Logger } from "../wire/log.js";
import { structuredInput, textOf, toMessage, type Input } from "../wire/message.js";
import type { Message, Part } from "../wire/protocol.js";
import type { Session } from "../store/session.js";
import type { Task, TaskState } from "../wire/task.js";
import type { SubmitOptions, TaskHandle } from "../client/task-handle.js";
import { SpanAttr, SpanKind, activeTracer, childTrace, endSpan, endedUnsuccessfully, otelContextOf, startSpan, traceOfSpanContext, type TraceContext } from "../wire/trace.js";

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

/** Handles one capability; the return value becomes the reply or the task's result. */
export type Handler = (ctx: AgentContext) => Input | void | Promise<Input | void>;

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
  /**
   * Who the submitter acted for, when it submitted the task behind a bridge
   * (an API key's name, `oidc:<sub>`): the task's `metadata.caller`.
   */
  caller?: string;
  taskId?: string;
  contextId?: string;
  /** Earlier messages of the task (multi-turn), oldest first; empty for a fast call. */
  history: Message[];
  /** Aborted on cancel, or when the agent stops and the drain timeout passes. */
  signal: AbortSignal;
  /**
   * The W3C trace context the handler runs in: its own span's when an
   * OpenTelemetry SDK is registered, else the caller's (a new trace when the
   * caller sent none). `call` and `submit` carry it; send it on requests of
   * your own (`traceHeaders(ctx.trace)` gives `traceparent` and `tracestate`).
   */
  trace: TraceContext;
  /**
   * The same as an OpenTelemetry context, whose span is the handler's:
   * `tracer.startSpan(name, {}, ctx.otelContext)` makes a child of it. With
   * an SDK and a context manager registered it is also the active context
   * while the handler runs.
   */
  otelContext: Context;
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
  /**
   * Ends this turn in `state` (COMPLETED, FAILED, REJECTED, CANCELED,
   * INPUT_REQUIRED or AUTH_REQUIRED), with an optional agent message: what
   * `complete`, `fail`, `reject` and `inputRequired` do, for handlers that
   * relay another runtime's states as they are. In a fast call only
   * COMPLETED answers; the others fail the call.
   */
  end(state: TaskState, message?: Input): Promise<void>;
  /** Tells the bus the handler is still busy (keeps a long task's work item from redelivery). */
  working(): void;
  /**
   * Durable fan-out and fan-in: submits `children` as tasks of this one
   * (each once: a child that exists is not submitted again; its id is
   * `<this task's id>-<key>`), lists them on this task
   * (`metadata.children`), and resolves with their final tasks, in the
   * order given, once every one has ended, whatever its state. Until then
   * the handler does not wait: this run ends there (the task stays
   * WORKING, its work item is acknowledged, the slot is free), and when the
   * last child ends the handler runs again from the start, so what it does
   * before `fanOut` must be safe to do again. Call it once per run, with
   * the same children. A durable task only (in a fast call, or in an
   * end-to-end encrypted task, `MISUSE`).
   */
  fanOut(children: ChildTask[]): Promise<Task[]>;
}

/** One child of {@link AgentContext.fanOut}. */
export interface ChildTask {
  /** The capability the child is submitted to. */
  capability: string;
  input: Input;
  /** Names the child among its siblings (letters, digits, `-`, `_`); default its position. */
  key?: string;
  /** Options of the child's submit (priority, deadline, metadata, …); its id, parent, context and depth are the flow's. */
  options?: Omit<SubmitOptions, "taskId" | "parent" | "contextId" | "depth">;
}

/** How a context's outputs are delivered: into a reply, or as task events. */
export interface ContextSink {
  status(message: Message): Promise<void>;
  artifact(parts: Part[], options: ArtifactOptions & { artifactId: string }): Promise<void>;
  message(message: Message): Promise<void>;
  /** Ends the turn in `state` with an optional agent message. */
  end(state: TaskState, message?: Message): Promise<void>;
  working(): void;
  /** The handler has finished: what follows (its result, its final state) ends the turn. */
  finishing?(): void;
  /** Set by {@link runHandler} for a durable task: the trace its events carry. */
  trace?: TraceContext;
  /** A durable task's fan-out (see {@link AgentContext.fanOut}); absent in a fast call. */
  fanOut?(children: ChildTask[], submit: AgentContext["submit"]): Promise<Task[]>;
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
  sink.finishing?.();
  const parts = result === undefined ? [] : agentMessage(result).parts;
  if (parts.length > 0) await sink.artifact(parts, { artifactId: randomUUID(), name: "result", lastChunk: true });
  await sink.end("TASK_STATE_COMPLETED");
}

/**
 * Runs `handler` on a new context over `sink`. With an OpenTelemetry SDK
 * registered, inside a span that continues the envelope's trace (`handle
 * <cap>`: SERVER for a fast call, CONSUMER for a durable task), made the
 * active context; without one nothing is added to the call path.
 */
export function runHandler(handler: Handler, base: ContextBase, sink: ContextSink, agentId: string): Input | void | Promise<Input | void> {
  const tracer = activeTracer();
  if (!tracer) {
    if (base.task) sink.trace = base.envelope.trace;
    return handler(createContext(base, sink));
  }
  const env = base.envelope;
  const span = startSpan(tracer, `handle ${base.capability}`, base.task ? SpanKind.CONSUMER : SpanKind.SERVER, env.trace, {
    [SpanAttr.messagingSystem]: "nats",
    [SpanAttr.capability]: base.capability,
    [SpanAttr.agent]: agentId,
    [SpanAttr.caller]: env.from,
    ...(base.task && { [SpanAttr.task]: base.task.id, [SpanAttr.context]: base.task.contextId }),
  });
  const active = trace.setSpan(otelContext.active(), span);
  const ctx = createContext(base, sink, span, active);
  if (base.task) sink.trace = ctx.trace;
  let result: Input | void | Promise<Input | void>;
  try {
    result = otelContext.with(active, handler, undefined, ctx);
  } catch (err) {
    endSpan(span, err);
    throw err;
  }
  return endingSpan(span, result);
}

/** Ends `span` when `result` settles, as an error when it rejects. */
async function endingSpan<T>(span: Span, result: T | Promise<T>): Promise<T> {
  try {
    const value = await result;
    endSpan(span);
    return value;
  } catch (err) {
    endSpan(span, err);
    throw err;
  }
}

/**
 * Builds a handler context over `sink`; `span` (and the context `active`
 * holding it) when the handler runs in one (see {@link runHandler}).
 */
export function createContext(base: ContextBase, sink: ContextSink, span?: Span, active?: Context): AgentContext {
  return new HandlerContext(base, sink, span, active);
}

/**
 * A handler's context. A class, not an object literal: a literal with
 * getters is built through the runtime, several µs per call on the agent's
 * hot path; an instance with getters on the prototype costs next to
 * nothing. The methods are own closures so that destructuring them works.
 */
class HandlerContext implements AgentContext {
  readonly capability: string;
  readonly userMessage: Message;
  readonly from: string;
  readonly envelope: Envelope;
  readonly task?: Task;
  readonly caller?: string;
  readonly taskId?: string;
  readonly contextId?: string;
  readonly history: Message[];
  readonly signal: AbortSignal;
  readonly session: AgentContext["session"];
  readonly call: AgentContext["call"];
  readonly submit: AgentContext["submit"];
  readonly status: AgentContext["status"];
  readonly artifact: AgentContext["artifact"];
  readonly message: AgentContext["message"];
  readonly inputRequired: AgentContext["inputRequired"];
  readonly complete: AgentContext["complete"];
  readonly fail: AgentContext["fail"];
  readonly reject: AgentContext["reject"];
  readonly end: AgentContext["end"];
  readonly working: AgentContext["working"];
  readonly fanOut: AgentContext["fanOut"];
  readonly #base: ContextBase;
  readonly #active?: Context;
  #log?: Logger;
  /** The trace to go on with: the span's, else the envelope's (a new one, on first use, when the caller sent none). */
  #trace?: TraceContext;

  constructor(base: ContextBase, sink: ContextSink, span?: Span, active?: Context) {
    const contextId = base.task?.contextId ?? base.userMessage.contextId ?? base.envelope.context;
    this.#base = base;
    this.#active = active;
    this.#trace = span ? traceOfSpanContext(span.spanContext()) : base.envelope.trace;
    this.capability = base.capability;
    this.userMessage = base.userMessage;
    this.from = base.envelope.from;
    this.envelope = base.envelope;
    this.task = base.task;
    this.caller = base.task?.metadata.caller;
    this.taskId = base.task?.id;
    this.contextId = contextId;
    this.history = base.task?.history ?? [];
    this.signal = base.signal;
    this.session = <T extends Record<string, unknown>>() => {
      if (!contextId) return Promise.reject(new AgentBusError("MISUSE", "no contextId: sessions belong to an A2A context"));
      return base.session<T>(contextId);
    };
    // base.call and base.submit carry the envelope's trace; ours differs with a span (or when the caller sent none).
    const carry = this.#trace !== base.envelope.trace || !this.#trace;
    this.call = carry ? (c, i, o) => base.call(c, i, { trace: this.trace, ...o }) : base.call;
    this.submit = carry ? (c, i, o) => base.submit(c, i, { trace: this.trace, ...o }) : base.submit;
    this.status = (update) => sink.status(agentMessage(update));
    this.artifact = (content, options = {}) => sink.artifact(agentMessage(content).parts, { ...options, artifactId: options.artifactId ?? randomUUID() });
    this.message = (content) => sink.message(agentMessage(content));
    this.inputRequired = (question) => sink.end("TASK_STATE_INPUT_REQUIRED", question === undefined ? undefined : agentMessage(question));
    this.complete = (result) => completeWith(sink, result);
    // Failing without throwing still makes the handler's span an error.
    this.fail = (reason) => (endedUnsuccessfully(span, "TASK_STATE_FAILED"), sink.end("TASK_STATE_FAILED", agentMessage(reason)));
    this.reject = (reason) => (endedUnsuccessfully(span, "TASK_STATE_REJECTED"), sink.end("TASK_STATE_REJECTED", agentMessage(reason)));
    this.end = (state, message) => {
      if (state === "TASK_STATE_FAILED" || state === "TASK_STATE_REJECTED") endedUnsuccessfully(span, state);
      return sink.end(state, message === undefined ? undefined : agentMessage(message));
    };
    this.working = () => sink.working();
    this.fanOut = (children) =>
      sink.fanOut ? sink.fanOut(children, this.submit) : Promise.reject(new AgentBusError("MISUSE", "fanOut needs a durable task: submit the work, do not call it"));
  }

  get input(): unknown {
    return this.#base.input ?? structuredInput(this.#base.userMessage);
  }

  get text(): string {
    return textOf(this.#base.userMessage);
  }

  get trace(): TraceContext {
    return (this.#trace ??= childTrace());
  }

  get otelContext(): Context {
    return this.#active ?? otelContextOf(this.trace);
  }

  // Built on first use: a pino child per call would cost on the hot path.
  get log(): Logger {
    return (this.#log ??= this.#base.log());
  }
}
