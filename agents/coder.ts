/**
 * A coding agent on the bus: offers capability `code` and runs a
 * command-line coding agent once per task, in a working directory,
 * streaming its stdout and stderr back as artifact chunks (the
 * "OpenCode bridge" pattern). Built on `adapters/cli` in a few lines.
 *
 *   AGENTBUS_INSECURE=1 npx tsx agents/coder.ts                       # harmless default command
 *   AGENTBUS_CODER_COMMAND="opencode run" AGENTBUS_CODER_WORKDIR=~/src/app npx tsx agents/coder.ts
 *   npx tsx cli/main.ts call code "add a README"                      # from another terminal
 *
 * Environment: NATS_URL, AGENTBUS_TENANT, AGENTBUS_SEED_FILE, AGENTBUS_INSECURE
 * (as for agents/echo.ts), and
 * - AGENTBUS_CODER_COMMAND: the program and its first arguments, split on
 *   spaces (no shell); the request is appended as the last argument.
 *   Default: a Node one-liner that echoes the request and lists the directory.
 * - AGENTBUS_CODER_WORKDIR: run every task there (e.g. a checkout). Default:
 *   one fresh directory per A2A context under the system temp directory, so
 *   a multi-turn conversation keeps its files and two conversations do not
 *   share them.
 * - AGENTBUS_CODER_TIMEOUT_MS: kill a run after this long (default 30 min).
 */
import { mkdir } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AgentContext, type Bus } from "../core/index.js";
import { runStandalone } from "./standalone.js";
import { serveCommand, type CommandAgent } from "../adapters/cli/index.js";

/** Options of {@link startCoder}; each defaults to its environment variable. */
export interface CoderOptions {
  /** Program and arguments; the request is appended as the last argument. */
  command?: string[];
  /** One directory for every task; default: a fresh one per A2A context. */
  workdir?: string;
  timeoutMs?: number;
  /** Agent name (default `coder`). */
  name?: string;
}

// The default "coding agent": echoes the request and lists the working
// directory. Harmless, offline, and it shows where a real one would work.
const DEMO_SCRIPT = [
  'const fs = require("node:fs");',
  "console.log(`request: ${process.argv[1]}`);",
  "console.log(`working directory: ${process.cwd()}`);",
  'for (const f of fs.readdirSync(".")) console.log(`  ${f}`);',
  'console.log("(set AGENTBUS_CODER_COMMAND to run a real coding agent, e.g. \\"opencode run\\")");',
].join(" ");
const DEMO_COMMAND = [process.execPath, "-e", DEMO_SCRIPT, "--"];

/** Starts the coder on `bus` (one agent per connection), e.g. from `agentbus up --demo`. */
export async function startCoder(bus: Bus, options: CoderOptions = {}): Promise<CommandAgent> {
  const configured = process.env.AGENTBUS_CODER_COMMAND?.split(/\s+/).filter(Boolean);
  const [command, ...args] = options.command ?? (configured?.length ? configured : DEMO_COMMAND);
  const workdir = options.workdir ?? (process.env.AGENTBUS_CODER_WORKDIR || undefined);
  const envTimeout = Number(process.env.AGENTBUS_CODER_TIMEOUT_MS);
  return serveCommand(bus, {
    capability: "code",
    command: command!,
    args,
    // The request goes last on the command line: `opencode run "<request>"`.
    input: "arg",
    // Where the program runs: the configured directory, or one per conversation.
    cwd: workdir ?? contextDir,
    timeoutMs: options.timeoutMs ?? (envTimeout > 0 ? envTimeout : 30 * 60_000),
    spec: {
      name: options.name ?? "coder",
      description: "Runs a command-line coding agent on a request, streaming its output.",
      skills: [{ id: "code", description: "Carry out a coding request in a working directory", tags: ["demo", "coding"], examples: ["add a README"] }],
    },
  });
}

/**
 * A directory per A2A context. The context id comes from the caller, so it
 * is never used as a path as it is: a hash names the directory.
 */
async function contextDir(ctx: AgentContext): Promise<string> {
  const key = ctx.contextId ?? ctx.taskId ?? "calls";
  const dir = join(tmpdir(), "agentbus-coder", createHash("sha256").update(key).digest("hex").slice(0, 16));
  await mkdir(dir, { recursive: true });
  return dir;
}

// Run standalone (`npx tsx agents/coder.ts`), not when imported.
await runStandalone(import.meta.url, "coder", (bus) => startCoder(bus));
