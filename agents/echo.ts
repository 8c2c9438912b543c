/**
 * The smallest agent: offers capability `echo` and answers with what it got.
 *
 *   npx tsx agents/echo.ts            # NATS_URL or nats://127.0.0.1:4222
 *   npx tsx cli/main.ts call echo hi  # from another terminal
 *
 * AGENTBUS_INSECURE=1 skips the ACL for local play; otherwise grant callers
 * with `agentbus acl allow <rule> <caller-id> <this-agent-id> echo`.
 */
import { connect } from "../core/index.js";

const bus = await connect({
  servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222",
  tenant: process.env.AGENTBUS_TENANT ?? "default",
  seedFile: process.env.AGENTBUS_SEED_FILE,
  insecureAllowAll: process.env.AGENTBUS_INSECURE === "1",
});

await bus.agent(
  {
    name: "echo",
    description: "Repeats the text it receives.",
    skills: [{ id: "echo", description: "Echo the input text back", tags: ["demo"], examples: ["hello"] }],
  },
  // A handler gets the verified caller, the A2A message and its text; what it returns is the reply.
  { echo: (ctx) => ctx.text },
);
bus.log.info({ id: bus.id }, "echo agent ready");

// SIGINT/SIGTERM: finish in-flight calls, withdraw presence, drain.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => void bus.close().then(() => process.exit(0)));
