/**
 * The smallest agent: offers capability `echo` and answers with what it got.
 *
 *   npx tsx agents/echo.ts            # NATS_URL or nats://127.0.0.1:4222
 *   npx tsx cli/main.ts call echo hi  # from another terminal
 *
 * AGENTBUS_INSECURE=1 skips the ACL for local play; otherwise grant callers
 * with `agentbus acl allow <rule> <caller-id> <this-agent-id> echo`.
 */
import { type Agent, type AgentSpec, type Bus } from "../core/index.js";
import { runStandalone } from "./standalone.js";

export const echoSpec: AgentSpec = {
  name: "echo",
  description: "Repeats the text it receives.",
  skills: [{ id: "echo", description: "Echo the input text back", tags: ["demo"], examples: ["hello"] }],
};

/** Runs the echo agent on `bus` (one agent per connection). */
export function startEcho(bus: Bus): Promise<Agent> {
  // A handler gets the verified caller, the A2A message and its text; what it returns is the reply.
  return bus.agent(echoSpec, { echo: (ctx) => ctx.text });
}

export default startEcho;

// Run standalone (`npx tsx agents/echo.ts`), not when imported.
await runStandalone(import.meta.url, "echo", (bus) => startEcho(bus));
