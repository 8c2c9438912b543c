/**
 * A streaming agent: offers capability `write` and writes a short answer
 * about the request's topic, one sentence at a time, as chunks of a single
 * artifact, so a caller sees the answer grow. A cancel stops it between
 * chunks. (The text comes from a template: the point is the streaming.)
 *
 *   npx tsx agents/writer.ts                       # NATS_URL or nats://127.0.0.1:4222
 *   npx tsx cli/main.ts send write "the sea"       # from another terminal: chunks as they arrive
 *   npx tsx cli/main.ts agent run agents/writer.ts # the same agent, started by the CLI
 *
 * AGENTBUS_INSECURE=1 skips the ACL for local play; otherwise grant callers
 * with `agentbus acl allow <rule> <caller-id> <this-agent-id> write`.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { type Agent, type AgentContext, type AgentSpec, type Bus } from "../core/index.js";
import { runStandalone } from "./standalone.js";

export interface WriterOptions {
  /** Pause before each chunk, ms (default 600: about three seconds for an answer). */
  delayMs?: number;
}

export const writerSpec: AgentSpec = {
  name: "writer",
  description: "Writes a short answer about a topic, streamed sentence by sentence.",
  skills: [{ id: "write", description: "Write a short answer about the topic in the input text", tags: ["demo", "streaming"], examples: ["the sea"] }],
};

/** The answer, already cut into the chunks we will stream. */
export function draft(topic: string): string[] {
  return [
    `Here is a short note on ${topic}.`,
    ` ${topic[0]!.toUpperCase()}${topic.slice(1)} is easier to think about in small parts.`,
    " Start with what you know for certain, then name what you are unsure of.",
    " Each sentence of this answer travels as its own chunk of one artifact.",
    ` That is all on ${topic} for now.`,
  ];
}

/** Runs the writer on `bus` (one agent per connection). */
export function startWriter(bus: Bus, options: WriterOptions = {}): Promise<Agent> {
  const delayMs = options.delayMs ?? 600;
  return bus.agent(writerSpec, { write: (ctx) => write(ctx, delayMs) });
}

async function write(ctx: AgentContext, delayMs: number): Promise<void> {
  // Plain text is the topic; JSON input may say {"topic": …}.
  const topic = (ctx.text || (ctx.input as { topic?: string } | undefined)?.topic || "nothing in particular").trim();
  const chunks = draft(topic);
  // A status update is a task event too (a no-op in a fast call).
  await ctx.status(`writing about ${topic}`);
  for (const [i, chunk] of chunks.entries()) {
    // ctx.signal aborts on cancel: stop at once, the bus ends the task CANCELED.
    try {
      await sleep(delayMs, undefined, { signal: ctx.signal });
    } catch {
      ctx.log.info({ task: ctx.taskId, sent: i }, "canceled while writing");
      return;
    }
    // Same artifactId for every chunk: the first creates the artifact,
    // `append` adds to it, `lastChunk` tells readers it is complete.
    await ctx.artifact(chunk, { artifactId: "answer", name: "answer", append: i > 0, lastChunk: i === chunks.length - 1 });
  }
  // Returning nothing: the streamed artifact is the answer (a returned value
  // would become a second, "result" artifact).
}

export default startWriter;

// Run standalone (`npx tsx agents/writer.ts`), not when imported.
await runStandalone(import.meta.url, "writer", (bus) => startWriter(bus));
