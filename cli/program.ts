/** The `agentbus` command tree (parsing and exit codes are `main.ts`'s). */
import { Command } from "commander";
import { acl, agent, bridge, call, identity, keygen, ls, mcp, revoke, send, tail, task } from "./commands.js";
import { up } from "./up.js";
import { gateway } from "./adapters.js";

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
    .addCommand(identity())
    .addCommand(task())
    .addCommand(agent())
    .addCommand(bridge())
    .addCommand(gateway())
    .addCommand(mcp());
}
