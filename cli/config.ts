/**
 * Configuration of `agentbus up`: defaults, then a file
 * (`agentbus.config.json`, `.yaml` or `.yml`), then environment variables,
 * then flags; the result is checked against one JSON Schema and every
 * problem is reported at once, with the path of each.
 */
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { AgentBusError, schemaErrors, type JsonSchema } from "../core/internal.js";
import { mcpGatewayConfigSchema, type McpGatewayConfig } from "../adapters/mcp/index.js";
import { isLoopbackHost } from "../bridges/http/index.js";
import { NATS_ADDRESS_PATTERN } from "./nats-url.js";

/** The whole configuration of `agentbus up`. */
export interface UpConfig {
  nats: {
    /** A server to use as is; without it: a JetStream server at `localUrl`, else an embedded one. */
    url?: string;
    localUrl: string;
    /** Client port of an embedded server (default: a free port). */
    port?: number;
  };
  tenant: string;
  /** The region every connection of `agentbus up` says it runs in (see `ConnectOptions.region`); with `regions`, the gateway's (default the first). */
  region?: string;
  /**
   * Every region of a federated bus (see `ConnectOptions.regions`): the
   * gateway and every connection are federated. Embedded: a supercluster
   * of one cluster per region (one node each, joined by gateways, the
   * tenants' accounts on every node), the demo agents running in each.
   */
  regions?: string[];
  /**
   * Edge sites (with `regions`, embedded): a leaf node each, with its own
   * JetStream domain (its name) and authority, linked to the first region
   * (the hub, domain `hub`); the demo's echo agent runs at each.
   */
  edges?: string[];
  /** Directory of an embedded server's data and of the gateway's identity. */
  dataDir: string;
  /** nkey seed file of the gateway's identity (default `<dataDir>/gateway.seed`, created on first start). */
  seedFile?: string;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  gateway: {
    host: string;
    port: number;
    /** Port of the A2A gRPC binding (on `host`); absent: no gRPC. */
    grpcPort?: number;
    /** No authentication: every caller acts as the gateway (local use; `host` must be a loopback address). */
    open: boolean;
    /** API keys file (`[{name, sha256, tenant?, seedFile?}]`); a key without `seedFile` acts as `<dataDir>/keys/<name>.seed`, created once. */
    keysFile?: string;
    /** Bearer JWTs of an OpenID Connect issuer; their callers act as `<dataDir>/oidc.seed`, created once. */
    oidc?: { issuer: string; audience: string | string[]; jwksUrl?: string };
    /** More `Host` names to serve (`name`, `name:port`, `*.domain`, `*`) besides loopback, the address of each request and `baseUrl`'s host. */
    allowedHosts?: string[];
    /** More origins whose web pages may call the gateway (`https://app.example.com`, `*`). */
    allowedOrigins?: string[];
    baseUrl?: string;
    rateLimit?: { max: number; timeWindowMs: number };
    /** How long a stop waits for in-flight requests and tasks before cutting them, ms. */
    drainTimeoutMs: number;
  };
  /** Start the example agents (echo, writer, orchestrator, coder) and let any identity of the tenant call them. */
  demo: boolean;
  /** Agent modules to run in this process (as `agentbus agent run`). */
  agents: string[];
  /** External MCP servers to join as capabilities `mcp.<server>.<tool>`. */
  mcp?: McpGatewayConfig;
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** JSON Schema of {@link UpConfig}. */
export const upConfigSchema = {
  type: "object",
  additionalProperties: false,
  required: ["nats", "tenant", "dataDir", "logLevel", "gateway", "demo", "agents"],
  properties: {
    nats: {
      type: "object",
      additionalProperties: false,
      required: ["localUrl"],
      properties: {
        url: { type: "string", pattern: NATS_ADDRESS_PATTERN },
        localUrl: { type: "string", pattern: "^(nats|tls)://" },
        port: { type: "integer", minimum: 1, maximum: 65535 },
      },
    },
    tenant: { type: "string", pattern: "^[a-z0-9_-]+$" },
    region: { type: "string", pattern: "^[A-Za-z0-9_-]{1,64}$" },
    regions: { type: "array", minItems: 1, uniqueItems: true, items: { type: "string", pattern: "^[A-Za-z0-9_-]{1,64}$" } },
    edges: { type: "array", minItems: 1, uniqueItems: true, items: { type: "string", pattern: "^[A-Za-z0-9_-]{1,64}$" } },
    dataDir: { type: "string", minLength: 1 },
    seedFile: { type: "string", minLength: 1 },
    logLevel: { enum: LOG_LEVELS },
    gateway: {
      type: "object",
      additionalProperties: false,
      required: ["host", "port", "open", "drainTimeoutMs"],
      properties: {
        host: { type: "string", minLength: 1 },
        port: { type: "integer", minimum: 0, maximum: 65535 },
        grpcPort: { type: "integer", minimum: 0, maximum: 65535 },
        open: { type: "boolean" },
        keysFile: { type: "string", minLength: 1 },
        oidc: {
          type: "object",
          additionalProperties: false,
          required: ["issuer", "audience"],
          properties: {
            issuer: { type: "string", pattern: "^https?://" },
            audience: { anyOf: [{ type: "string", minLength: 1 }, { type: "array", minItems: 1, items: { type: "string", minLength: 1 } }] },
            jwksUrl: { type: "string", pattern: "^https?://" },
          },
        },
        allowedHosts: { type: "array", items: { type: "string", pattern: "^(\\*|(\\*\\.)?(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?)$" } },
        allowedOrigins: { type: "array", items: { type: "string", pattern: "^(\\*|https?://[^/?#\\s]+)$" } },
        baseUrl: { type: "string", pattern: "^https?://" },
        rateLimit: {
          type: "object",
          additionalProperties: false,
          required: ["max", "timeWindowMs"],
          properties: { max: { type: "integer", minimum: 1 }, timeWindowMs: { type: "integer", minimum: 1 } },
        },
        drainTimeoutMs: { type: "integer", minimum: 0 },
      },
    },
    demo: { type: "boolean" },
    agents: { type: "array", items: { type: "string", minLength: 1 } },
    mcp: mcpGatewayConfigSchema,
  },
} as const satisfies JsonSchema;

/** Flags of `agentbus up` that override the file and environment. */
export interface UpFlags {
  config?: string;
  nats?: string;
  tenant?: string;
  region?: string;
  /** Comma-separated regions (`--regions`). */
  regions?: string;
  /** Comma-separated edge sites (`--edges`). */
  edges?: string;
  port?: string;
  grpcPort?: string;
  host?: string;
  open?: boolean;
  keys?: string;
  /** Comma-separated `Host` names (`--allowed-hosts`). */
  allowedHosts?: string;
  /** Comma-separated origins (`--allowed-origins`). */
  allowedOrigins?: string;
  demo?: boolean;
  dataDir?: string;
  seed?: string;
  logLevel?: string;
}

const FILE_NAMES = ["agentbus.config.json", "agentbus.config.yaml", "agentbus.config.yml"];

/** Thrown when the configuration is invalid: `problems` lists each one as `<path> <what is wrong>`. */
export class ConfigError extends AgentBusError {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super("INVALID_INPUT", `invalid configuration (${source}):\n${problems.map((p) => `  ${p}`).join("\n")}`);
  }
}

/**
 * Builds the configuration from defaults, the file (the one named, else the
 * first of `agentbus.config.{json,yaml,yml}` in `cwd`), the environment and
 * the flags, and validates it.
 *
 * @throws {ConfigError} listing every problem.
 */
export function loadUpConfig(flags: UpFlags, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): { config: UpConfig; file?: string } {
  const file = flags.config ? resolve(cwd, flags.config) : FILE_NAMES.map((n) => resolve(cwd, n)).find((p) => existsSync(p));
  const fromFile = file ? readConfigFile(file) : {};
  const config = merge(merge(merge(defaults(cwd), fromFile), fromEnv(env)), fromFlags(flags));
  const source = file ?? "defaults, environment and flags";
  const problems = schemaErrors(upConfigSchema, config);
  const gateway = (config.gateway ?? {}) as Record<string, unknown>;
  if (problems.length === 0 && !gateway.open && !gateway.keysFile && !gateway.oidc && !config.demo) {
    problems.push("/gateway give keysFile (API keys), oidc (bearer JWTs) or open: true (local use only); the gateway refuses to run without authentication by accident");
  }
  const regions = config.regions as string[] | undefined;
  if (problems.length === 0 && regions && config.region !== undefined && !regions.includes(config.region as string)) {
    problems.push(`/region ${String(config.region)} is not one of /regions (${regions.join(", ")})`);
  }
  const edges = config.edges as string[] | undefined;
  if (problems.length === 0 && edges && !regions) problems.push("/edges edge sites link to a hub: give /regions too");
  if (problems.length === 0 && edges && regions) {
    for (const e of edges) if (regions.includes(e) || e === "hub") problems.push(`/edges ${e} is the name of a region or of the hub's domain`);
  }
  if (problems.length) throw new ConfigError(source, problems);
  const valid = config as unknown as UpConfig;
  // Federated: the gateway's region is the first unless one is given.
  if (valid.regions && valid.region === undefined) valid.region = valid.regions[0];
  // The demo is for a newcomer's machine: open unless keys or OIDC are given.
  if (valid.demo && !valid.gateway.keysFile && !valid.gateway.oidc) valid.gateway.open = true;
  // Without authentication, only this machine may reach the gateway.
  if (valid.gateway.open && !isLoopbackHost(valid.gateway.host)) {
    throw new ConfigError(source, [
      `/gateway/host ${valid.gateway.host} is not a loopback address: open mode (no authentication${valid.demo ? ", the demo without keys" : ""}) listens on 127.0.0.1, ::1 or localhost only; give keysFile or oidc to serve other hosts`,
    ]);
  }
  return { config: valid, file };
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (cause) {
    throw new ConfigError(file, [`cannot read: ${(cause as Error).message}`]);
  }
  let value: unknown;
  try {
    value = file.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
  } catch (cause) {
    throw new ConfigError(file, [`/ not valid ${file.endsWith(".json") ? "JSON" : "YAML"}: ${(cause as Error).message}`]);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new ConfigError(file, ["/ must be object"]);
  return value as Record<string, unknown>;
}

function defaults(cwd: string): Record<string, unknown> {
  return {
    nats: { localUrl: "nats://127.0.0.1:4222" },
    tenant: "default",
    dataDir: resolve(cwd, ".agentbus"),
    logLevel: "info",
    gateway: { host: "127.0.0.1", port: 8080, open: false, drainTimeoutMs: 30_000 },
    demo: false,
    agents: [],
  };
}

/** Numbers from the environment stay as typed when they do not parse, so the schema names them. */
const num = (v: string | undefined) => (v === undefined ? undefined : v.trim() !== "" && Number.isFinite(Number(v)) ? Number(v) : v);
/** A comma-separated list; empty items are dropped. */
const list = (v: string | undefined) => (v === undefined ? undefined : v.split(",").map((s) => s.trim()).filter(Boolean));
const bool = (v: string | undefined) => (v === undefined ? undefined : v === "1" || v === "true" ? true : v === "0" || v === "false" ? false : v);

function fromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> {
  return {
    nats: { url: env.NATS_URL || undefined },
    tenant: env.AGENTBUS_TENANT,
    region: env.AGENTBUS_REGION || undefined,
    regions: list(env.AGENTBUS_REGIONS || undefined),
    edges: list(env.AGENTBUS_EDGES || undefined),
    dataDir: env.AGENTBUS_DATA_DIR,
    seedFile: env.AGENTBUS_SEED_FILE,
    logLevel: env.AGENTBUS_LOG_LEVEL,
    gateway: {
      host: env.AGENTBUS_HOST,
      port: num(env.AGENTBUS_PORT),
      grpcPort: num(env.AGENTBUS_GRPC_PORT),
      open: bool(env.AGENTBUS_OPEN),
      keysFile: env.AGENTBUS_KEYS_FILE,
      baseUrl: env.AGENTBUS_BASE_URL,
      allowedHosts: list(env.AGENTBUS_ALLOWED_HOSTS),
      allowedOrigins: list(env.AGENTBUS_ALLOWED_ORIGINS),
      oidc: oidcFromEnv(env),
    },
    demo: bool(env.AGENTBUS_DEMO),
  };
}

/** `gateway.oidc` from `AGENTBUS_OIDC_ISSUER`, `AGENTBUS_OIDC_AUDIENCE` (comma-separated) and `AGENTBUS_OIDC_JWKS_URL`, when any is set. */
function oidcFromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> | undefined {
  const { AGENTBUS_OIDC_ISSUER: issuer, AGENTBUS_OIDC_AUDIENCE: audience, AGENTBUS_OIDC_JWKS_URL: jwksUrl } = env;
  if (!issuer && !audience && !jwksUrl) return undefined;
  const audiences = list(audience);
  return { issuer: issuer || undefined, audience: audiences && audiences.length === 1 ? audiences[0] : audiences, jwksUrl: jwksUrl || undefined };
}

function fromFlags(f: UpFlags): Record<string, unknown> {
  return {
    nats: { url: f.nats },
    tenant: f.tenant,
    region: f.region,
    regions: list(f.regions),
    edges: list(f.edges),
    dataDir: f.dataDir,
    seedFile: f.seed,
    logLevel: f.logLevel,
    gateway: { host: f.host, port: num(f.port), grpcPort: num(f.grpcPort), open: f.open, keysFile: f.keys, allowedHosts: list(f.allowedHosts), allowedOrigins: list(f.allowedOrigins) },
    demo: f.demo,
  };
}

/** Deep merge of plain objects; `undefined` leaves the value below in place, arrays replace. */
function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue;
    const below = out[key];
    out[key] =
      value && typeof value === "object" && !Array.isArray(value) && below && typeof below === "object" && !Array.isArray(below)
        ? merge(below as Record<string, unknown>, value as Record<string, unknown>)
        : value;
  }
  return out;
}
