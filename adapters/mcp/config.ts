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

/** The gateway's configuration: what `agentbus gateway mcp --config <file>` reads (JSON). */
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

/** Checks a configuration (e.g. parsed from a file); `INVALID_INPUT` says what is wrong. */
export function parseMcpGatewayConfig(value: unknown): McpGatewayConfig {
  try {
    validate(value);
  } catch (err) {
    // The schema validator speaks of "input"; this is the gateway's configuration.
    throw new AgentBusError("INVALID_INPUT", `invalid MCP gateway configuration: ${(err as Error).message.replace(/^input does not match the schema: /, "")}`);
  }
  return value as McpGatewayConfig;
}

/** True for a stdio server entry. */
export const isStdio = (c: McpServerConfig): c is StdioServerConfig => "command" in c;
