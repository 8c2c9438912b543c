/**
 * An agent that calls other agents: offers capability `orchestrate`, splits
 * the request in two, asks `echo` (a fast call) and `write` (a durable task)
 * in parallel, and combines their answers into one.
 *
 * Calls made through the handler's context carry where they come from: the
 * A2A context id, `Mesh-Parent` (this task's id) and `Mesh-Depth` (this
 * task's depth + 1), so the child tasks show who asked for them
 * (`agentbus task get <child>` → metadata.parent, metadata.depth) and a
 * loop of agents calling each other is refused past the depth limit.
 *
 *   npx tsx agents/echo.ts & npx tsx agents/writer.ts & npx tsx agents/orchestrator.ts &
 *   npx tsx cli/main.ts send orchestrate "hello | the sea"   # echo gets "hello", write gets "the sea"
 *
 * AGENTBUS_INSECURE=1 skips the ACL for local play; otherwise grant callers
 * `orchestrate` on this agent, and this agent `echo` and `write`.
 */
import { textOf, type Agent, type AgentContext, type AgentSpec, type Bus, type TaskHandle } from "../core/index.js";
import { runStandalone } from "./standalone.js";

export interface OrchestratorOptions {
  /** Capability asked with a fast call (default `echo`). */
  quick?: string;
  /** Capability asked as a durable task (default `write`). */
  slow?: string;
}

export const orchestratorSpec: AgentSpec = {
  name: "orchestrator",
  description: "Splits a request, asks two other agents in parallel, and combines their answers.",
  skills: [{
    id: "orchestrate",
    description: "Text `A | B`: A goes to echo, B to write (one text goes to both); or JSON {echo, write}",
    tags: ["demo", "agent-to-agent"],
    examples: ["hello | the sea"],
  }],
};

/** Splits the request: `A | B` (text), `{echo, write}` (JSON), or the same text for both. */
export function split(ctx: AgentContext): [string, string] {
  const data = ctx.input as { echo?: unknown; write?: unknown } | undefined;
  if (typeof data?.echo === "string" && typeof data.write === "string") return [data.echo, data.write];
  const [a = "", b] = ctx.text.split("|").map((s) => s.trim());
  return [a, b ?? a];
}

/** Runs the orchestrator on `bus` (one agent per connection). */
export function startOrchestrator(bus: Bus, options: OrchestratorOptions = {}): Promise<Agent> {
  const quick = options.quick ?? "echo";
  const slow = options.slow ?? "write";
  return bus.agent(orchestratorSpec, {
    orchestrate: async (ctx) => {
      const [forQuick, forSlow] = split(ctx);
      await ctx.status(`asking ${quick} and ${slow} in parallel`);

      // Both at once. ctx.call / ctx.submit (not bus.call / bus.submit) add
      // this task as the parent and depth + 1 to what they send.
      let child: TaskHandle | undefined;
      // Canceled, or one half failed: do not leave the child task running.
      const cancelChild = () => void child?.cancel().catch(() => {}); // a finished child refuses: fine
      ctx.signal.addEventListener("abort", cancelChild, { once: true });
      try {
        const [reply, done] = await Promise.all([
          ctx.call(quick, forQuick, { signal: ctx.signal }),
          ctx.submit(slow, forSlow).then(async (handle) => {
            child = handle;
            await ctx.status(`${slow} runs as task ${handle.id}`);
            return handle.result({ signal: ctx.signal });
          }),
        ]);
        if (done.status.state !== "TASK_STATE_COMPLETED") {
          return ctx.fail(`${slow} ended ${done.status.state}${done.status.message ? `: ${textOf(done.status.message)}` : ""}`);
        }
        const echoed = textOf(reply);
        const written = done.artifacts.flatMap((a) => a.parts.map((p) => p.text ?? "")).join("");
        // The returned value becomes this task's `result` artifact: the
        // combined text, and the same as data for programs.
        return [
          { text: `${quick}: ${echoed}\n${slow}: ${written}` },
          { data: { [quick]: echoed, [slow]: written, children: { [slow]: done.id } } },
        ];
      } catch (err) {
        cancelChild();
        throw err; // the bus retries the task with backoff, then fails it
      } finally {
        ctx.signal.removeEventListener("abort", cancelChild);
      }
    },
  });
}

export default startOrchestrator;

// Run standalone (`npx tsx agents/orchestrator.ts`), not when imported.
await runStandalone(import.meta.url, "orchestrator", (bus) => startOrchestrator(bus));
