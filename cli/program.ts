/** The `agentbus` command tree (parsing and exit codes are `main.ts`'s). */
import { Command } from "commander";
import { acl, agent, bridge, call, identity, keygen, ls, mcp, revoke, send, tail, task } from "./commands.js";
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
    .addCommand(up())
    .addCommand(keygen())
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
