/**
 * Commands that put outside things on the bus and keep them there until a
 * stop signal: a plain HTTP endpoint, a command-line program, MCP servers.
 */
import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { parse as parseYaml } from "yaml";
import { AgentBusError } from "../core/index.js";
import { serveHttp } from "../adapters/http/index.js";
import { serveCommand } from "../adapters/cli/index.js";
import { parseMcpGatewayConfig, startMcpGateway, type McpGatewayConfig } from "../adapters/mcp/index.js";
import { print, untilSignal, withBus, withCommon, type CommonOptions } from "./options.js";

const integer = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new AgentBusError("INVALID_INPUT", `${name} must be a whole number, got ${value}`);
  return n;
};

/** `Name: value` pairs from repeated `--header` options. */
function headers(values: string[] = []): Record<string, string> {
  return Object.fromEntries(
    values.map((h) => {
      const at = h.indexOf(":");
      if (at <= 0) throw new AgentBusError("INVALID_INPUT", `--header must be "Name: value", got ${h}`);
      return [h.slice(0, at).trim(), h.slice(at + 1).trim()];
    }),
  );
}

/** `agentbus agent http <cap> <url>`: a capability served by POSTing each task's input to a URL. */
export function agentHttp(): Command {
  return withCommon(new Command("http"))
    .description("serve a capability with an HTTP endpoint: the task input is POSTed as JSON; JSON, text or SSE answers become the reply")
    .argument("<capability>", "capability id to offer")
    .argument("<url>", "endpoint to POST to")
    .option("--header <name:value...>", "request header (repeatable)")
    .option("--timeout <ms>", "per attempt", integer("--timeout"), 30_000)
    .option("--retries <n>", "retries on connection errors, 5xx and 429", integer("--retries"), 2)
    .action(async (capability: string, url: string, o: CommonOptions & { header?: string[]; timeout: number; retries: number }) => {
      await withBus(o, async (bus) => {
        const served = await serveHttp(bus, { capability, url, headers: headers(o.header), timeoutMs: o.timeout, retries: o.retries });
        print(o, { id: bus.id, capability, url: new URL(url).origin }, `${capability} (${bus.id}) → POST ${new URL(url).origin}${new URL(url).pathname}; Ctrl-C to stop`);
        await untilSignal();
        await served.stop();
      });
    });
}

/** `agentbus agent cmd <cap> -- <command> [args…]`: a capability served by running a program per task. */
export function agentCmd(): Command {
  return withCommon(new Command("cmd"))
    .description("serve a capability with a command-line program, one process per task; output lines stream as artifact chunks")
    .argument("<capability>", "capability id to offer")
    .argument("<command...>", "program and its arguments (put them after --)")
    .addOption(new Option("--input <how>", "how the task input reaches the program").choices(["stdin", "arg", "none"]).default("stdin"))
    .option("--cwd <dir>", "working directory")
    .option("--timeout <ms>", "per task (0: none)", integer("--timeout"), 600_000)
    .action(async (capability: string, command: string[], o: CommonOptions & { input: "stdin" | "arg" | "none"; cwd?: string; timeout: number }) => {
      const [program, ...args] = command;
      await withBus(o, async (bus) => {
        const served = await serveCommand(bus, { capability, command: program!, args, input: o.input, cwd: o.cwd, timeoutMs: o.timeout });
        print(o, { id: bus.id, capability, command: program }, `${capability} (${bus.id}) runs ${program} per task; Ctrl-C to stop`);
        await untilSignal();
        await served.stop();
      });
    });
}

/** `agentbus gateway mcp --config <file>`: MCP servers' tools as bus capabilities `mcp.<server>.<tool>`. */
export function gateway(): Command {
  const cmd = new Command("gateway").description("join outside tool servers onto the bus");
  cmd.addCommand(
    withCommon(new Command("mcp"))
      .description("the tools of MCP servers (stdio or Streamable HTTP) as capabilities mcp.<server>.<tool>")
      .requiredOption("--config <file>", "JSON or YAML: {servers: {<name>: {command, args?, env?} | {url, headers?}}, breaker?, restart?}")
      .action(async (o: CommonOptions & { config: string }) => {
        let raw: McpGatewayConfig;
        try {
          const text = readFileSync(o.config, "utf8");
          raw = (o.config.endsWith(".json") ? JSON.parse(text) : parseYaml(text)) as McpGatewayConfig;
        } catch (cause) {
          throw new AgentBusError("INVALID_INPUT", `--config ${o.config}: ${(cause as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (cause as Error).message}`, { cause });
        }
        // Checked (and its ${VAR}s resolved) before connecting: a bad file is a usage error; the gateway expands the file as it is, once.
        parseMcpGatewayConfig(raw);
        await withBus(o, async (bus) => {
          const running = await startMcpGateway({ bus, ...raw });
          const tools = running.tools().map((t) => t.capability);
          print(o, { id: bus.id, tools }, `MCP gateway (${bus.id}) serves ${tools.length} tools: ${tools.join(", ")}; Ctrl-C to stop`);
          await untilSignal();
          await running.close();
        });
      }),
  );
  return cmd;
}
