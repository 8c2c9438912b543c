import { randomFillSync } from "node:crypto";
import {
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context as otelContext,
  createTraceState,
  trace,
  type Attributes,
  type Context,
  type Span,
  type SpanContext,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);
// W3C: at most 32 list members, 512 characters is what vendors must accept.
// Printable ASCII also keeps it safe as a NATS header value.
const TRACESTATE = /^[\x20-\x7e]{1,512}$/;

/** W3C trace context as carried in `traceparent` / `tracestate` headers. */
export interface TraceContext {
  traceparent: string;
  tracestate?: string;
}

// Span and trace ids come from a pooled random buffer: two randomBytes()
// calls per message cost ~6–10 µs on the call path, a slice of the pool <1 µs.
const pool = Buffer.alloc(4096);
let offset = pool.length;
function randomHex(bytes: number): string {
  if (offset + bytes > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  offset += bytes;
  return pool.toString("hex", offset - bytes, offset);
}

/** The trace id of a `traceparent`, or undefined when malformed. */
export function traceIdOf(traceparent: string | undefined): string | undefined {
  return traceparent ? TRACEPARENT.exec(traceparent)?.[1] : undefined;
}

/**
 * A child span of `parent` (same trace id, new span id), or a new trace when
 * there is no valid parent. An all-zero trace id is invalid per W3C.
 */
export function childTrace(parent?: TraceContext): TraceContext {
  const m = parent ? TRACEPARENT.exec(parent.traceparent) : null;
  const span = randomHex(8);
  if (m && m[1] !== ZERO_TRACE) {
    return { traceparent: `00-${m[1]}-${span}-${m[3]}`, tracestate: parent?.tracestate };
  }
  return { traceparent: `00-${randomHex(16)}-${span}-01` };
}

/** `traceparent` (version 00) and `tracestate` as an OpenTelemetry span context; undefined when invalid. */
export function spanContextOf(t: TraceContext): SpanContext | undefined {
  const m = TRACEPARENT.exec(t.traceparent);
  if (!m || m[1] === ZERO_TRACE || m[2] === ZERO_SPAN) return undefined;
  return {
    traceId: m[1]!,
    spanId: m[2]!,
    traceFlags: Number.parseInt(m[3]!, 16),
    isRemote: true,
    ...(t.tracestate && { traceState: createTraceState(t.tracestate) }),
  };
}

/** An OpenTelemetry span context as `traceparent` / `tracestate`. */
export function traceOfSpanContext(sc: SpanContext): TraceContext {
  const flags = (sc.traceFlags & 0xff).toString(16).padStart(2, "0");
  const tracestate = sc.traceState?.serialize();
  return { traceparent: `00-${sc.traceId}-${sc.spanId}-${flags}`, ...(tracestate && { tracestate }) };
}

/**
 * The trace context of an incoming HTTP request (or MCP `_meta`), when its
 * `traceparent` is valid. Header names are lower case (Node's
 * `IncomingHttpHeaders`, `Object.fromEntries(headers)`). A repeated
 * `traceparent` is invalid (W3C); repeated `tracestate` headers are joined;
 * a `tracestate` that is too long or not printable ASCII is dropped.
 */
export function traceFromHeaders(headers: Record<string, unknown> | undefined): TraceContext | undefined {
  const traceparent = headers?.traceparent;
  if (typeof traceparent !== "string" || !spanContextOf({ traceparent })) return undefined;
  const raw = headers!.tracestate;
  const tracestate = Array.isArray(raw) ? raw.join(",") : raw;
  return typeof tracestate === "string" && TRACESTATE.test(tracestate) ? { traceparent, tracestate } : { traceparent };
}

/** Headers that send `t` on an outgoing HTTP request (or MCP `_meta`). */
export function traceHeaders(t: TraceContext): { traceparent: string; tracestate?: string } {
  return t.tracestate ? { traceparent: t.traceparent, tracestate: t.tracestate } : { traceparent: t.traceparent };
}

// --- OpenTelemetry ----------------------------------------------------------

/** Span attribute names the bus sets (no payloads, no secrets). */
export const SpanAttr = {
  capability: "agentbus.capability",
  task: "agentbus.task.id",
  /** The state a task was in when a bridge answered. */
  taskState: "agentbus.task.state",
  context: "agentbus.context.id",
  /** The agent that handles the call or task. */
  agent: "agentbus.agent.id",
  /** The verified identity that sent the call or task. */
  caller: "agentbus.caller.id",
  /** The agent a call is addressed to (`target`). */
  target: "agentbus.target.id",
  tenant: "agentbus.tenant",
  errorCode: "agentbus.error.code",
  messagingSystem: "messaging.system",
  destination: "messaging.destination.name",
} as const;

// With no SDK registered the global provider is a proxy without a delegate:
// its delegate is then this no-op provider.
const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate();
let provider: TracerProvider | undefined;
let tracer: Tracer | undefined;

/**
 * The `agentbus` tracer when an OpenTelemetry SDK is registered, else
 * undefined: callers skip every span then, so the hot path does no tracing
 * work at all (a few property reads, no allocation).
 */
export function activeTracer(): Tracer | undefined {
  const global = trace.getTracerProvider();
  const p = global instanceof ProxyTracerProvider ? global.getDelegate() : global;
  if (p === NOOP_PROVIDER) return undefined;
  if (p !== provider) {
    provider = p;
    tracer = p.getTracer("agentbus");
  }
  return tracer;
}

/**
 * The span of a `bus.call` (CLIENT) or `bus.submit` (PRODUCER): a child of
 * `parent`, named `call <cap>` / `submit <cap>`.
 */
export function busSpan(t: Tracer, op: "call" | "submit", cap: string, subject: string, tenant: string, parent?: TraceContext, target?: string, task?: string): Span {
  return startSpan(t, `${op} ${cap}`, op === "call" ? SpanKind.CLIENT : SpanKind.PRODUCER, parent, {
    [SpanAttr.messagingSystem]: "nats",
    [SpanAttr.destination]: subject,
    [SpanAttr.capability]: cap,
    [SpanAttr.tenant]: tenant,
    ...(target && { [SpanAttr.target]: target }),
    ...(task && { [SpanAttr.task]: task }),
  });
}

/** An OpenTelemetry context whose span is the one `t` names (none when `t` is invalid). */
export function otelContextOf(t: TraceContext | undefined, base: Context = ROOT_CONTEXT): Context {
  const sc = t && spanContextOf(t);
  return sc ? trace.setSpanContext(base, sc) : base;
}

/**
 * Starts a span as a child of `parent` (the trace an envelope or request
 * carried), or, without one, of the active OpenTelemetry context; its trace
 * id is therefore the bus's. Only call it with a tracer from
 * {@link activeTracer}.
 */
export function startSpan(t: Tracer, name: string, kind: SpanKind, parent: TraceContext | undefined, attributes?: Attributes): Span {
  const ctx = parent ? otelContextOf(parent, otelContext.active()) : otelContext.active();
  return t.startSpan(name, { kind, attributes }, ctx);
}

/**
 * The trace context to send from inside `span`: the span's own when it has
 * a valid one (an SDK is registered); otherwise a new child of `parent`.
 */
export function traceOf(span: Span | undefined, parent?: TraceContext): TraceContext {
  const sc = span?.spanContext();
  if (sc && trace.isSpanContextValid(sc)) return traceOfSpanContext(sc);
  return childTrace(parent);
}

/** Ends `span`; with `err`, as an error with its code (never its message: it may carry data). */
export function endSpan(span: Span | undefined, err?: unknown): void {
  if (!span) return;
  if (err !== undefined) {
    const code = (err as { code?: unknown })?.code;
    const what = typeof code === "string" ? code : ((err as Error)?.name ?? "Error");
    if (typeof code === "string") span.setAttribute(SpanAttr.errorCode, code);
    span.setStatus({ code: SpanStatusCode.ERROR, message: what });
  }
  span.end();
}

/**
 * Marks `span` as an error because its task ended unsuccessfully without an
 * exception (`ctx.fail`, `ctx.reject`): the state is the status message.
 */
export function endedUnsuccessfully(span: Span | undefined, state: string): void {
  if (!span) return;
  span.setAttribute(SpanAttr.taskState, state);
  span.setStatus({ code: SpanStatusCode.ERROR, message: state });
}

/**
 * One traced operation at the edge of the bus (a bridge request, an
 * outgoing request of an adapter): the span when an SDK is registered, and
 * the trace context to send on or continue in. Off the hot path; the
 * call path uses {@link activeTracer} directly.
 */
export interface Traced {
  span?: Span;
  /** The span's context; without an SDK a new child of the parent (a new trace without one). */
  trace: TraceContext;
  /** Ends the span (see {@link endSpan}). */
  end(err?: unknown): void;
  /** Runs `work`, then ends the span: as an error when `work` throws (and rethrows). */
  run<T>(work: () => Promise<T>): Promise<T>;
}

/** Starts a {@link Traced} operation (see {@link startSpan}). */
export function traced(name: string, kind: SpanKind, parent: TraceContext | undefined, attributes?: Attributes): Traced {
  const t = activeTracer();
  const span = t && startSpan(t, name, kind, parent, attributes);
  const end = (err?: unknown) => endSpan(span, err);
  return {
    span,
    trace: traceOf(span, parent),
    end,
    run: async (work) => {
      try {
        const value = await work();
        end();
        return value;
      } catch (err) {
        end(err);
        throw err;
      }
    },
  };
}

export { SpanKind };
