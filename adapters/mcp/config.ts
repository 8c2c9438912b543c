import { AgentBusError, validatorFor, type JsonSchema, type WorkerOptions } from "../../core/internal.js";

/** An MCP server the gateway starts as a child process and talks to over stdio. */
export interface StdioServerConfig {
  command: string;
  args?: string[];
  /** Added to a minimal safe environment (PATH, HOME, …): the gateway's own environment is not passed on. Never logged. */
  env?: Record<string, string>;
  cwd?: string;
  /** Per-request deadline (connect, list, each tool call), ms (default 30 000). */
  timeoutMs?: number;
}

/** An MCP server reached over Streamable HTTP. */
export interface HttpServerConfig {
  /** The server's MCP endpoint, e.g. `https://tools.example.com/mcp`. */
  url: string;
  /** Sent with every request (e.g. `Authorization`). Never logged or audited. */
  headers?: Record<string, string>;
  /** Per-request deadline (connect, list, each tool call), ms (default 30 000). */
  timeoutMs?: number;
}

/** One server entry: stdio when it has `command`, Streamable HTTP when it has `url`. */
export type McpServerConfig = StdioServerConfig | HttpServerConfig;

/** Circuit breaker per server. */
export interface McpBreakerOptions {
  /** Consecutive failures (unreachable, crashed, timed out) that open the circuit (default 5). */
  failureThreshold?: number;
  /** How long an open circuit fails calls at once before one probe call is let through, ms (default 10 000). */
  resetTimeoutMs?: number;
}

/** Restarts of a crashed stdio server (and reconnects of a server down at start). */
export interface McpRestartOptions {
  /** First delay, doubled per failed attempt, ms (default 250). */
  minDelayMs?: number;
  /** Longest delay, ms (default 30 000). */
  maxDelayMs?: number;
}

/**
 * The gateway's configuration: what `agentbus gateway mcp --config <file>`
 * reads (JSON or YAML). In server entries, `${NAME}` is the environment
 * variable's value (`$${` a literal `${`).
 */
export interface McpGatewayConfig {
  /** Servers by name; the name is the second token of each capability (`mcp.<server>.<tool>`): `[a-z0-9_-]+`. */
  servers: Record<string, McpServerConfig>;
  /** Name of the gateway's bus agent (default `mcp-gateway`); replicas use the same. */
  name?: string;
  breaker?: McpBreakerOptions;
  restart?: McpRestartOptions;
  /** Durable-task settings of the gateway agent (retries of an unreachable server: `maxDeliver`, `backoffMs`). */
  tasks?: WorkerOptions;
}

const positive = { type: "integer", minimum: 1 } as const;
const stringMap = { type: "object", additionalProperties: { type: "string" } } as const;

/** JSON Schema of {@link McpGatewayConfig}. */
export const mcpGatewayConfigSchema = {
  type: "object",
  required: ["servers"],
  additionalProperties: false,
  properties: {
    name: { type: "string", minLength: 1 },
    servers: {
      type: "object",
      minProperties: 1,
      // The name becomes a subject token.
      propertyNames: { pattern: "^[a-z0-9_-]+$" },
      // if/then/else rather than oneOf: errors then speak of the kind the entry is meant to be.
      additionalProperties: {
        type: "object",
        if: { required: ["command"] },
        then: {
          additionalProperties: false,
          properties: { command: { type: "string", minLength: 1 }, args: { type: "array", items: { type: "string" } }, env: stringMap, cwd: { type: "string" }, timeoutMs: positive },
        },
        else: {
          required: ["url"],
          additionalProperties: false,
          properties: { url: { type: "string", pattern: "^https?://" }, headers: stringMap, timeoutMs: positive },
        },
      },
    },
    breaker: { type: "object", additionalProperties: false, properties: { failureThreshold: positive, resetTimeoutMs: positive } },
    restart: { type: "object", additionalProperties: false, properties: { minDelayMs: positive, maxDelayMs: positive } },
    tasks: {
      type: "object",
      additionalProperties: false,
      properties: { concurrency: positive, ackWaitMs: positive, maxDeliver: positive, backoffMs: positive },
    },
  },
} as const satisfies JsonSchema;

const validate = validatorFor(mcpGatewayConfigSchema);

/** `${NAME}` in a configuration string; `$${` is a literal `${`. */
const VARIABLE = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/**
 * Every string of a server entry (`command`, `args`, `env`, `cwd`, `url`,
 * `headers`) with `${NAME}` replaced by the environment variable's value,
 * so secrets stay out of the file.
 *
 * @throws {AgentBusError} `INVALID_INPUT` naming the variable and where it is used, when it is not set.
 */
function expandServers(config: McpGatewayConfig, env: NodeJS.ProcessEnv): McpGatewayConfig {
  const expand = (text: string, where: string): string =>
    text.replace(VARIABLE, (match, name: string | undefined) => {
      if (name === undefined) return "${"; // `$${`
      const value = env[name];
      if (value === undefined) throw new AgentBusError("INVALID_INPUT", `invalid MCP gateway configuration: ${where} uses \${${name}}, which is not set in the environment`);
      return value;
    });
  const map = (m: Record<string, string> | undefined, where: string) => m && Object.fromEntries(Object.entries(m).map(([k, v]) => [k, expand(v, `${where}.${k}`)]));
  const servers: Record<string, McpServerConfig> = {};
  for (const [name, c] of Object.entries(config.servers)) {
    const at = `servers.${name}`;
    servers[name] = isStdio(c)
      ? { ...c, command: expand(c.command, `${at}.command`), ...(c.args && { args: c.args.map((a, i) => expand(a, `${at}.args[${i}]`)) }), ...(c.env && { env: map(c.env, `${at}.env`) }), ...(c.cwd !== undefined && { cwd: expand(c.cwd, `${at}.cwd`) }) }
      : { ...c, url: expand(c.url, `${at}.url`), ...(c.headers && { headers: map(c.headers, `${at}.headers`) }) };
  }
  return { ...config, servers };
}

/**
 * Checks a configuration (e.g. parsed from a file) and expands `${NAME}`
 * in its server entries from `env` (default: the process's environment);
 * `INVALID_INPUT` says what is wrong.
 */
export function parseMcpGatewayConfig(value: unknown, env: NodeJS.ProcessEnv = process.env): McpGatewayConfig {
  try {
    validate(value);
  } catch (err) {
    // The schema validator speaks of "input"; this is the gateway's configuration.
    throw new AgentBusError("INVALID_INPUT", `invalid MCP gateway configuration: ${(err as Error).message.replace(/^input does not match the schema: /, "")}`);
  }
  return expandServers(value as McpGatewayConfig, env);
}

/** True for a stdio server entry. */
export const isStdio = (c: McpServerConfig): c is StdioServerConfig => "command" in c;
