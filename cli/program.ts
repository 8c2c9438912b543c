/** The `agentbus` command tree (parsing and exit codes are `main.ts`'s). */
import { Command } from "commander";
import { acl, agent, bridge, call, id, identity, keygen, ls, mcp, revoke, send, tail, task } from "./commands.js";
import { packageVersion } from "./version.js";
import { up } from "./up.js";
import { schedule } from "./schedule.js";
import { work } from "./work.js";
import { gateway } from "./adapters.js";
import { authority, identityDirectoryCommands, tenant } from "./authority.js";

/** `agentbus identity`: issue, ls and revoke (the authority's directory) and rotate (signed policy). */
function identities(): Command {
  const cmd = identity();
  for (const sub of identityDirectoryCommands()) cmd.addCommand(sub);
  return cmd;
}

/** The whole command tree. */
export function program(): Command {
  return new Command("agentbus")
    .description("agentbus: an agent bus on NATS")
    .version(packageVersion() ?? "unknown (no package.json declaring the agentbus command above this program)", "-V, --version", "print the version")
    .addHelpText(
      "after",
      `
Exit codes: 0 success, 1 task failed or refused (NO_RESPONDERS, DENIED, …),
2 usage error, 3 connection error (NATS unreachable or not a NATS server).

The NATS server, tenant and identity: --nats, --tenant, --seed (or NATS_URL,
AGENTBUS_TENANT, AGENTBUS_SEED); without them, the agentbus up running with
the data dir (--data-dir, AGENTBUS_DATA_DIR, default ./.agentbus: it records
itself in up.json), in its tenant and, with --demo, as its demo user; else
nats://127.0.0.1:4222, tenant default, a new identity each run.

  agentbus up --demo                 # in one terminal
  agentbus send write "the sea"      # in another, same directory`,
    )
    .addCommand(up())
    .addCommand(keygen())
    .addCommand(id())
    .addCommand(ls())
    .addCommand(call())
    .addCommand(send())
    .addCommand(tail())
    .addCommand(acl())
    .addCommand(revoke())
    .addCommand(identities())
    .addCommand(authority())
    .addCommand(tenant())
    .addCommand(task())
    .addCommand(schedule())
    .addCommand(work())
    .addCommand(agent())
    .addCommand(bridge())
    .addCommand(gateway())
    .addCommand(mcp());
}
