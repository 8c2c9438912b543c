import { SSE_HEADERS, formatSSEErrorEvent, formatSSEEvent } from "@a2a-js/sdk";
import type { FastifyReply } from "fastify";
import { CURSOR_KEY } from "./handler.js";

/** How one binding writes a stream: its events' JSON, and an error before and during the stream. */
export interface SseFormat {
  /** The JSON of one streamed value (a JSON-RPC response; an HTTP+JSON StreamResponse). */
  event(value: unknown): unknown;
  /** Answers a stream that failed before its first event (no SSE yet): a JSON body. */
  refuse(reply: FastifyReply, err: unknown): FastifyReply;
  /** The body of the SSE `error` event that ends a stream failing after it started. */
  error(err: unknown): unknown;
}

/**
 * Relays a stream of A2A responses as SSE on the raw socket, with
 * keep-alive comments, each event's cursor as its SSE `id` (a client
 * reconnecting with `Last-Event-ID` resumes after it). A client that goes
 * away (the response closes) stops the relay: `gone` is aborted, which
 * stops the event consumer at once, and the iterator is closed; the task
 * itself runs on.
 */
export async function streamSse(
  reply: FastifyReply,
  stream: AsyncIterable<unknown>,
  format: SseFormat,
  keepAliveMs: number,
  headers: Record<string, string>,
  gone: AbortController,
): Promise<unknown> {
  const iterator = stream[Symbol.asyncIterator]();
  let first: IteratorResult<unknown>;
  try {
    first = await iterator.next();
  } catch (err) {
    return format.refuse(reply, err);
  }
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { ...SSE_HEADERS, ...headers });
  let closed = false;
  const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), keepAliveMs);
  // The response's close: the client went away (the request's fires once its body has been read).
  res.on("close", () => {
    closed = true;
    clearInterval(keepAlive);
    gone.abort();
    void iterator.return?.(undefined);
  });
  const write = (value: unknown) => {
    const json = format.event(value);
    const cursor = cursorOf(json);
    res.write(`${cursor === undefined ? "" : `id: ${cursor}\n`}${formatSSEEvent(json)}`);
  };
  try {
    if (!first.done) write(first.value);
    while (!closed) {
      const next = await iterator.next();
      if (next.done) break;
      write(next.value);
    }
  } catch (err) {
    if (!closed) res.write(formatSSEErrorEvent(format.error(err)));
  } finally {
    clearInterval(keepAlive);
    if (!res.writableEnded) res.end();
  }
}

/**
 * The cursor a streamed response carries in its payload's metadata: a
 * JSON-RPC response's `result` (v1.0: `result.<kind>.metadata`; v0.3:
 * `result.metadata`), or an HTTP+JSON StreamResponse (`<kind>.metadata`).
 */
function cursorOf(json: unknown): string | undefined {
  const body = json as Record<string, unknown> | undefined;
  if (!body || typeof body !== "object") return undefined;
  const result = (body.jsonrpc === "2.0" ? body.result : body) as Record<string, unknown> | undefined;
  if (!result) return undefined;
  const direct = (result.metadata as Record<string, unknown> | undefined)?.[CURSOR_KEY];
  if (typeof direct === "string") return direct;
  for (const payload of Object.values(result)) {
    const cursor = ((payload as { metadata?: Record<string, unknown> } | null)?.metadata)?.[CURSOR_KEY];
    if (typeof cursor === "string") return cursor;
  }
  return undefined;
}
