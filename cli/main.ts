#!/usr/bin/env node
/**
 * The `agentbus` command. Exit codes: 0 success, 1 failed, 2 usage error,
 * 3 connection error.
 */
import { Command, CommanderError } from "commander";
import { isAgentBusError } from "../core/index.js";
import { acl, agent, bridge, call, exitCodeOf, keygen, ls, mcp, revoke, task } from "./commands.js";
import { Exit } from "./options.js";

const program = new Command("agentbus")
  .description("agentbus: an agent bus on NATS")
  .addCommand(keygen())
  .addCommand(ls())
  .addCommand(call())
  .addCommand(acl())
  .addCommand(revoke())
  .addCommand(task())
  .addCommand(agent())
  .addCommand(bridge())
  .addCommand(mcp());

// Usage errors in any subcommand come back here (exit 2) instead of exiting 1.
const override = (c: Command): void => {
  c.exitOverride();
  c.commands.forEach(override);
};
override(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version end up here with exit code 0.
    process.exit(err.exitCode === 0 ? Exit.ok : Exit.usage);
  }
  const code = isAgentBusError(err) ? `${err.code}: ` : "";
  process.stderr.write(`agentbus: ${code}${(err as Error).message}\n`);
  process.exit(exitCodeOf(err));
}
