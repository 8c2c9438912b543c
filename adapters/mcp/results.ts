import type { CallToolResult } from "@modelcontextprotocol/client";
import type { Part } from "../../core/index.js";

type Block = CallToolResult["content"][number];

/** One MCP content block as an A2A part. */
function partOf(block: Block): Part {
  switch (block.type) {
    case "text":
      return { text: block.text };
    case "image":
    case "audio":
      // Base64 in MCP, base64 in A2A's `raw`: passed through, not decoded.
      return { raw: block.data, mediaType: block.mimeType, metadata: { mcpType: block.type } };
    case "resource_link":
      return { url: block.uri, ...(block.mimeType && { mediaType: block.mimeType }), filename: block.name, metadata: { mcpType: block.type, ...(block.description && { description: block.description }) } };
    case "resource": {
      const r = block.resource;
      const meta = { mcpType: block.type, uri: r.uri };
      return "text" in r
        ? { text: r.text, ...(r.mimeType && { mediaType: r.mimeType }), metadata: meta }
        : { raw: r.blob, ...(r.mimeType && { mediaType: r.mimeType }), metadata: meta };
    }
    default:
      // A block type newer than this code: kept whole rather than dropped.
      return { data: block, metadata: { mcpType: (block as { type?: string }).type ?? "unknown" } };
  }
}

/**
 * A successful tool result as the parts of the task's result artifact:
 * text blocks → text parts, images and audio → `raw` parts with their media
 * type, resource links → `url` parts, embedded resources → text or `raw`
 * parts carrying the resource URI; `structuredContent` → one data part.
 */
export function partsOf(result: CallToolResult): Part[] {
  const parts = (result.content ?? []).map(partOf);
  if (result.structuredContent !== undefined) parts.push({ data: result.structuredContent });
  return parts;
}

/** The reason a tool gave with `isError: true`: its text blocks. */
export function errorTextOf(result: CallToolResult): string {
  const text = (result.content ?? []).flatMap((b) => (b.type === "text" ? [b.text] : [])).join("\n").trim();
  return text || "the tool reported an error without a message";
}
