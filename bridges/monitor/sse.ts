import { SSE_HEADERS, formatSSEErrorEvent, formatSSEEvent } from "@a2a-js/sdk";
import type { FastifyReply } from "fastify";

/** What a relay writes: items from `events`, until they end or the client goes away (then `stop`). */
export interface SseSource {
  events: AsyncIterable<unknown>;
  /** Ends `events` from outside (a generator waiting on a consumer cannot be returned early). */
  stop(): void;
}

/**
 * Writes `source` as Server-Sent Events on the hijacked reply, framed by the
 * A2A SDK's `formatSSEEvent` as the A2A bridge does, with a keep-alive
 * comment every `keepAliveMs`. Headers go out at once, so a client knows it
 * is subscribed. A client that disconnects stops the source; an error ends
 * the stream with an `error` event carrying `{code, message}`.
 */
export async function relaySse(reply: FastifyReply, source: SseSource, keepAliveMs: number, toError: (err: unknown) => unknown): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, SSE_HEADERS);
  res.flushHeaders();
  let closed = false;
  const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), keepAliveMs);
  const onClose = () => {
    closed = true;
    clearInterval(keepAlive);
    source.stop();
  };
  res.on("close", onClose);
  try {
    for await (const item of source.events) {
      if (closed) break;
      res.write(formatSSEEvent(item));
    }
  } catch (err) {
    if (!closed) res.write(formatSSEErrorEvent(toError(err)));
  } finally {
    clearInterval(keepAlive);
    res.off("close", onClose);
    source.stop();
    if (!res.writableEnded) res.end();
  }
}
