import { randomUUID } from "node:crypto";
import CircuitBreaker from "opossum";
import { EventSourceParserStream } from "eventsource-parser/stream";
import { AgentBusError, SpanAttr, SpanKind, traced, traceHeaders, type Agent, type AgentContext, type AgentSpec, type Bus, type Handler, type Part, type WorkerOptions } from "../../core/internal.js";

/** Circuit breaker settings of {@link serveHttp} (opossum). */
export interface HttpBreakerOptions {
  /** Failure percentage, within the rolling window, that opens the circuit (default 50). */
  errorThresholdPercentage?: number;
  /** Requests in the window before the percentage counts (default 3). */
  volumeThreshold?: number;
  /** How long an open circuit fails fast before letting one request through (default 10 000 ms). */
  resetTimeoutMs?: number;
  /** Length of the rolling statistics window (default 10 000 ms). */
  rollingCountTimeoutMs?: number;
}

/** Options of {@link serveHttp}. */
export interface HttpAdapterOptions {
  /** The capability served (`[a-z0-9_-]+` tokens joined by dots). */
  capability: string;
  /** The endpoint every task's input is POSTed to. */
  url: string | URL;
  /** Extra request headers (e.g. `authorization`), or a function of the task that returns them. */
  headers?: Record<string, string> | ((ctx: AgentContext) => Record<string, string> | Promise<Record<string, string>>);
  /**
   * The JSON request body (default `ctx.input`: the first data part of the
   * message, else `{ text }`).
   */
  body?: (ctx: AgentContext) => unknown;
  /** Time limit of one attempt, from sending the request to the end of the response body or stream (default 30 000 ms). */
  timeoutMs?: number;
  /** Further attempts after a connection error, a 5xx or a 429 (default 2). */
  retries?: number;
  /** First retry delay, doubled per attempt (default 200 ms); a `Retry-After` header takes precedence. */
  backoffMs?: number;
  /** Longest delay between attempts, `Retry-After` included (default 10 000 ms). */
  maxBackoffMs?: number;
  /** Circuit breaker settings; `false` turns it off. */
  breaker?: HttpBreakerOptions | false;
  /**
   * The agent's card: name (default: the capability), description, version,
   * skills (default one skill, `capability`). Every skill is served by `url`;
   * the request's `x-agentbus-capability` header says which one was called.
   */
  spec?: Partial<AgentSpec>;
  /** Durable-task settings of the agent (concurrency, ack wait). */
  tasks?: WorkerOptions;
}

/** An HTTP endpoint serving a capability on the bus. */
export interface HttpAgent {
  agent: Agent;
  /** The breaker guarding the endpoint (disabled when `breaker: false`). */
  breaker: CircuitBreaker;
  /** Stops the agent (in-flight tasks drain) and the breaker. */
  stop(): Promise<void>;
}

/** A non-2xx answer. */
class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly statusText: string,
    readonly detail: string,
    readonly retryAfterMs: number | undefined,
  ) {
    super(`HTTP ${status}${statusText ? ` ${statusText}` : ""}${detail ? `: ${detail}` : ""}`);
  }
}

/** One attempt: what the breaker's action gets. */
interface Attempt {
  headers: Record<string, string>;
  body: string;
  signal: AbortSignal;
}

const DETAIL_CHARS = 500;
const retryableStatus = (status: number) => status >= 500 || status === 429;

/**
 * Serves a capability with a plain HTTP endpoint: each task's input is
 * POSTed to `url` as JSON, and the response becomes the task's outputs.
 *
 * **Request.** `POST url`, `content-type: application/json`, the body is
 * `ctx.input` (or `options.body(ctx)`), and these headers:
 * `accept: application/json, text/event-stream, text/plain`,
 * `idempotency-key` (the A2A message id: the same on every retry of one
 * turn), `x-agentbus-capability`, `x-agentbus-caller` (the caller's
 * verified bus identity), `traceparent` (and `tracestate`: the task's
 * trace, one span per attempt) and, for durable tasks, `x-agentbus-task`
 * and `x-agentbus-context`; then `options.headers`.
 *
 * **Response convention.**
 * - `2xx` with `application/json` (or `…+json`): a JSON string becomes a
 *   text artifact, any other JSON value a data artifact; `text/*`: a text
 *   artifact; any other type: a raw (base64) artifact with its media type.
 *   An empty body (`204`) completes the task with no artifact. The
 *   artifact is named `response`.
 * - `2xx` with `text/event-stream`: the task streams, one SSE event at a time:
 *   - unnamed events (or `event: message` / `chunk`): `data` is a text
 *     chunk of the `response` artifact (one artifact id, `append` after the
 *     first chunk; an empty closing chunk with `lastChunk: true` follows the
 *     last one);
 *   - `event: data`: `data` is JSON, appended to the same artifact as a data part;
 *   - `event: status`: `data` is a progress message (a WORKING status update);
 *   - `event: error`: the task FAILS with `data` as the reason;
 *   - `event: done`: the stream is over (closing the body does the same);
 *   - comments and other event names are ignored.
 *   In a fast call (`bus.call`) the text chunks are joined into one text part.
 * - `4xx` (except `429`): the task FAILS with the status and the start of the
 *   body; not retried.
 * - connection errors, `5xx` and `429`: retried up to `retries` times with
 *   exponential backoff (or `Retry-After`), then the task FAILS. A timed-out
 *   attempt is not retried (the endpoint may still be working on it), nor
 *   is a stream that already produced output.
 *
 * **Breaker.** Attempts that get no response (connection errors, timeouts
 * before the response headers) and `5xx` / `429` answers count as
 * failures; past the threshold the circuit opens and tasks FAIL at once,
 * without a request, until `resetTimeoutMs` has passed and a trial request
 * succeeds.
 *
 * Failure reasons and logs name the endpoint without its query string or
 * credentials.
 *
 * **Cancel.** Canceling the task (`ctx.signal`) aborts the HTTP request:
 * the endpoint sees its connection close; the task ends CANCELED.
 *
 * @example
 * ```ts
 * const bus = await connect({ tenant: "acme" });
 * await serveHttp(bus, { capability: "summarize", url: "http://127.0.0.1:9000/summarize", timeoutMs: 60_000 });
 * ```
 */
export async function serveHttp(bus: Bus, options: HttpAdapterOptions): Promise<HttpAgent> {
  const url = new URL(options.url);
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new AgentBusError("INVALID_INPUT", `not an HTTP URL: ${url.href}`);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const retries = options.retries ?? 2;
  const backoffMs = options.backoffMs ?? 200;
  const maxBackoffMs = options.maxBackoffMs ?? 10_000;
  const b = options.breaker === false ? {} : (options.breaker ?? {});
  // What reasons and logs show: no credentials, no query string (tokens live there).
  const shown = `${url.origin}${url.pathname}`;

  const breaker = new CircuitBreaker((a: Attempt) => send(url, a), {
    timeout: false, // the attempt's own signal carries the timeout
    errorThresholdPercentage: b.errorThresholdPercentage ?? 50,
    volumeThreshold: b.volumeThreshold ?? 3,
    resetTimeout: b.resetTimeoutMs ?? 10_000,
    rollingCountTimeout: b.rollingCountTimeoutMs ?? 10_000,
    // Truthy = not counted: a cancel, or a 4xx (the endpoint is up, the request was bad).
    errorFilter: (err: unknown) => (err instanceof AgentBusError && err.code === "CANCELLED") || (err instanceof HttpStatusError && !retryableStatus(err.status)),
  });
  if (options.breaker === false) breaker.disable();

  const handler: Handler = async (ctx) => {
    const body = JSON.stringify((options.body ? await options.body(ctx) : ctx.input) ?? null);
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "application/json, text/event-stream, text/plain",
      "idempotency-key": ctx.userMessage.messageId,
      "x-agentbus-capability": ctx.capability,
      "x-agentbus-caller": ctx.from,
      ...(ctx.taskId && { "x-agentbus-task": ctx.taskId }),
      ...(ctx.contextId && { "x-agentbus-context": ctx.contextId }),
      ...(typeof options.headers === "function" ? await options.headers(ctx) : options.headers),
    };
    const target = `POST ${shown}`;
    for (let attempt = 1; ; attempt++) {
      // One signal per attempt: aborted by a cancel or by the attempt's timeout.
      const ac = new AbortController();
      let timedOut = false;
      const onCancel = () => ac.abort(new AgentBusError("CANCELLED", "task canceled", { cause: ctx.signal.reason }));
      ctx.signal.addEventListener("abort", onCancel, { once: true });
      if (ctx.signal.aborted) onCancel();
      const timer = setTimeout(() => {
        timedOut = true;
        ac.abort(new AgentBusError("TIMEOUT", `timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      const output = { emitted: false };
      // A CLIENT span per attempt, under the handler's; the endpoint gets its traceparent.
      const op = traced("POST", SpanKind.CLIENT, ctx.trace, {
        "http.request.method": "POST",
        "url.full": shown,
        "server.address": url.hostname,
        "server.port": Number(url.port) || (url.protocol === "https:" ? 443 : 80),
        [SpanAttr.capability]: ctx.capability,
        ...(ctx.taskId && { [SpanAttr.task]: ctx.taskId }),
        ...(attempt > 1 && { "http.request.resend_count": attempt - 1 }),
      });
      try {
        const res = (await breaker.fire({ headers: { ...traceHeaders(op.trace), ...headers }, body, signal: ac.signal })) as Response;
        op.span?.setAttribute("http.response.status_code", res.status);
        await deliver(ctx, res, output);
        op.end();
        return;
      } catch (err) {
        if (err instanceof HttpStatusError) op.span?.setAttribute("http.response.status_code", err.status);
        op.end(err);
        if (ctx.signal.aborted) return; // canceled: the bus ends the task CANCELED
        const why = timedOut ? `timed out after ${timeoutMs} ms` : describe(err);
        const retryable = !timedOut && !output.emitted && (err instanceof HttpStatusError ? retryableStatus(err.status) : err instanceof TypeError);
        if (retryable && attempt <= retries && !breaker.opened) {
          const retryAfter = err instanceof HttpStatusError ? err.retryAfterMs : undefined;
          const delay = Math.min(maxBackoffMs, retryAfter ?? backoffMs * 2 ** (attempt - 1));
          ctx.log.warn({ url: shown, attempt, delay, reason: why }, "HTTP attempt failed, retrying");
          await ctx.status(`attempt ${attempt} failed (${why}); retrying in ${delay} ms`);
          if (await sleep(delay, ctx.signal)) return;
          continue;
        }
        const tries = attempt > 1 ? ` after ${attempt} attempts` : "";
        return ctx.fail(`${target} failed${tries}: ${why}`);
      } finally {
        clearTimeout(timer);
        ctx.signal.removeEventListener("abort", onCancel);
      }
    }
  };

  const skills = options.spec?.skills ?? [{ id: options.capability, description: `Served by ${shown}` }];
  if (!skills.some((s) => s.id === options.capability)) throw new AgentBusError("INVALID_INPUT", `spec.skills does not include ${options.capability}`);
  const agent = await bus.agent(
    { ...options.spec, name: options.spec?.name ?? options.capability, skills },
    Object.fromEntries(skills.map((s) => [s.id, handler])),
    { tasks: options.tasks },
  );
  return {
    agent,
    breaker,
    stop: async () => {
      await agent.stop();
      breaker.shutdown();
    },
  };
}

/** The breaker's action: sends the request, resolves once a 2xx's headers are in. */
async function send(url: URL, a: Attempt): Promise<Response> {
  const res = await fetch(url, { method: "POST", headers: a.headers, body: a.body, signal: a.signal, redirect: "follow" });
  if (res.ok) return res;
  const detail = await res.text().then(
    (t) => errorText(t),
    () => "",
  );
  throw new HttpStatusError(res.status, res.statusText, detail, retryAfter(res.headers.get("retry-after")));
}

/** A 2xx whose body broke the convention: not retried, not counted by the breaker. */
class ResponseError extends Error {}

/** Maps a 2xx response onto the task's outputs (see {@link serveHttp}). */
async function deliver(ctx: AgentContext, res: Response, output: { emitted: boolean }): Promise<void> {
  const type = (res.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (type === "text/event-stream") return stream(ctx, res, output);
  const name = "response";
  if (type === "application/json" || type.endsWith("+json")) {
    const text = await res.text();
    if (!text.trim()) return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new ResponseError(`the response says ${type} but is not JSON: ${errorText(text)}`);
    }
    return ctx.artifact([typeof value === "string" ? { text: value } : { data: value }], { name });
  }
  if (type.startsWith("text/") || type === "") {
    const text = await res.text();
    return text ? ctx.artifact([{ text }], { name }) : undefined;
  }
  const bytes = Buffer.from(await res.arrayBuffer());
  if (bytes.length > 0) await ctx.artifact([{ raw: bytes.toString("base64"), mediaType: type }], { name });
}

/** An SSE response as artifact chunks and status updates, as events arrive. */
async function stream(ctx: AgentContext, res: Response, output: { emitted: boolean }): Promise<void> {
  if (!res.body) return;
  const live = ctx.task !== undefined; // a fast call gets one reply: join the chunks
  const artifactId = randomUUID();
  const joined: Part[] = [];
  let chunks = 0;
  const chunk = async (part: Part) => {
    output.emitted = true;
    if (!live) {
      const last = joined.at(-1);
      if (part.text !== undefined && last?.text !== undefined) last.text += part.text;
      else joined.push({ ...part });
      return;
    }
    await ctx.artifact([part], { artifactId, name: "response", append: chunks > 0, lastChunk: false });
    chunks++;
  };
  const events = res.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
  // Leaving the loop early (error, done) cancels the stream and releases the connection.
  for await (const e of events) {
    const kind = e.event ?? "message";
    if (kind === "message" || kind === "chunk") await chunk({ text: e.data });
    else if (kind === "data") {
      let value: unknown;
      try {
        value = JSON.parse(e.data);
      } catch {
        throw new ResponseError(`an SSE data event is not JSON: ${errorText(e.data)}`);
      }
      await chunk({ data: value });
    } else if (kind === "status") {
      output.emitted = true;
      await ctx.status(e.data);
    } else if (kind === "error") {
      output.emitted = true;
      throw new ResponseError(`the endpoint reported an error: ${e.data || "(no reason given)"}`);
    } else if (kind === "done") break;
  }
  if (!live) {
    if (joined.length > 0) await ctx.artifact(joined, { artifactId, name: "response" });
    return;
  }
  if (chunks > 0) await ctx.artifact([{ text: "" }], { artifactId, name: "response", append: true, lastChunk: true });
}

/** A reason for people: what went wrong with one attempt. */
function describe(err: unknown): string {
  if (isOpen(err)) return "circuit open (the endpoint kept failing): failing fast until it may be back";
  if (err instanceof HttpStatusError || err instanceof ResponseError || err instanceof AgentBusError) return err.message;
  // fetch's TypeError("fetch failed") hides the reason in its cause chain.
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  const reason = cause?.code ?? cause?.message ?? (err as Error)?.message ?? String(err);
  return `cannot reach the endpoint: ${reason}`;
}

const isOpen = (err: unknown) => (err as { code?: string })?.code === "EOPENBREAKER";

/** The first characters of an error body, on one line. */
function errorText(text: string): string {
  let t = text.trim();
  try {
    const json = JSON.parse(t) as { error?: unknown; message?: unknown };
    const m = typeof json.error === "string" ? json.error : typeof json.message === "string" ? json.message : undefined;
    if (m) t = m;
  } catch {
    // not JSON: the text as it is
  }
  t = t.replace(/\s+/g, " ");
  return t.length > DETAIL_CHARS ? `${t.slice(0, DETAIL_CHARS)}…` : t;
}

/** `Retry-After` (seconds or an HTTP date) in ms. */
function retryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** Waits `ms`; true when `signal` aborted first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(false);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
