#!/usr/bin/env node
/**
 * The `agentbus` command. Exit codes: 0 success, 1 failed, 2 usage error,
 * 3 connection error.
 */
import { Command, CommanderError } from "commander";
import { isAgentBusError } from "../core/index.js";
import { exitCodeOf } from "./commands.js";
import { program as build } from "./program.js";
import { Exit } from "./options.js";

const program = build();

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
  // Scripts asked for JSON: the error is one JSON line on stderr too.
  if (process.argv.includes("--json")) {
    process.stderr.write(`${JSON.stringify({ error: { code: isAgentBusError(err) ? err.code : "ERROR", message: (err as Error).message } })}\n`);
  } else {
    const code = isAgentBusError(err) ? `${err.code}: ` : "";
    process.stderr.write(`agentbus: ${code}${(err as Error).message}\n`);
  }
  process.exit(exitCodeOf(err));
}
