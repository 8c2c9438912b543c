import type { Tool } from "@modelcontextprotocol/client";
import { validatorFor, type JsonSchema } from "../../core/internal.js";

/** A server's tool as a bus capability. */
export interface MappedTool {
  /** `mcp.<server>.<tool>` */
  capability: string;
  server: string;
  /** The tool's name on its server (what `tools/call` is sent with). */
  tool: string;
  title?: string;
  description?: string;
  inputSchema: JsonSchema;
  outputSchema?: JsonSchema;
}

/** A tool the gateway could not offer on the bus, and why. */
export interface RejectedTool {
  server: string;
  tool: string;
  reason: string;
}

const TOKENS = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;

/**
 * The capability for a tool: `mcp.<server>.<tool>`, with the tool name
 * lower-cased (capabilities are lower case), dots kept as token separators
 * (so ACL patterns like `mcp.github.issues.*` work) and any other character
 * outside `[a-z0-9_-]` (`/`, spaces, …) turned into `_`. Undefined when no
 * valid capability results (an empty token, e.g. `a..b` or a leading dot).
 */
export function capabilityOf(server: string, tool: string): string | undefined {
  const mapped = tool.toLowerCase().replace(/[^a-z0-9_.-]/g, "_");
  return TOKENS.test(mapped) ? `mcp.${server}.${mapped}` : undefined;
}

/** A tool schema as the bus validates it: the `$schema` key dropped (ajv here speaks draft-07; MCP servers may declare 2020-12). */
function busSchema(schema: unknown): JsonSchema | undefined {
  if (!schema || typeof schema !== "object") return undefined;
  const { $schema: _ignored, ...rest } = schema as JsonSchema;
  return rest;
}

/**
 * Maps a server's tools onto capabilities. A tool is rejected, with the
 * reason, when its name maps to no valid capability, when two of its
 * server's tools map to the same one (neither is offered: which one a caller
 * meant cannot be told), or when its input schema does not compile.
 */
export function mapTools(server: string, tools: Tool[]): { mapped: MappedTool[]; rejected: RejectedTool[] } {
  const rejected: RejectedTool[] = [];
  const byCapability = new Map<string, Tool[]>();
  for (const tool of tools) {
    const capability = capabilityOf(server, tool.name);
    if (!capability) {
      rejected.push({ server, tool: tool.name, reason: `tool name ${JSON.stringify(tool.name)} maps to no valid capability ([a-z0-9_-] tokens joined by dots)` });
      continue;
    }
    byCapability.set(capability, [...(byCapability.get(capability) ?? []), tool]);
  }
  const mapped: MappedTool[] = [];
  for (const [capability, same] of byCapability) {
    if (same.length > 1) {
      for (const t of same) rejected.push({ server, tool: t.name, reason: `tools ${same.map((s) => JSON.stringify(s.name)).join(", ")} all map to capability ${capability}` });
      continue;
    }
    const tool = same[0]!;
    const inputSchema = busSchema(tool.inputSchema) ?? { type: "object" };
    const outputSchema = busSchema(tool.outputSchema);
    try {
      validatorFor(inputSchema);
    } catch (err) {
      rejected.push({ server, tool: tool.name, reason: `input schema does not compile: ${(err as Error).message}` });
      continue;
    }
    mapped.push({ capability, server, tool: tool.name, title: tool.title ?? tool.annotations?.title, description: tool.description, inputSchema, ...(outputSchema && { outputSchema }) });
  }
  mapped.sort((a, b) => a.capability.localeCompare(b.capability));
  return { mapped, rejected };
}
