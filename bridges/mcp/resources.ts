import { isAgentBusError, preferOnline, type Bus, type Part, type Task } from "../../core/internal.js";

/**
 * The bus as MCP resources, independent of the SDK that serves them: each
 * online agent's A2A card, and (by template) any task the caller may read
 * and each part of its artifacts — the URIs tool results give embedded
 * resources (`agentbus://tasks/<task>/artifacts/<artifact>/<part>`).
 */

/** A resource as listed. */
export interface McpResource {
  uri: string;
  name: string;
  title?: string;
  description?: string;
  mimeType?: string;
}

/** A resource template as listed. */
export interface McpResourceTemplate {
  uriTemplate: string;
  name: string;
  description?: string;
  mimeType?: string;
}

/** What reading a resource gives. */
export type McpResourceContents = { uri: string; mimeType?: string } & ({ text: string } | { blob: string });

/** A URI this server has no resource for (each SDK answers it with its own not-found error). */
export class ResourceNotFound extends Error {
  constructor(readonly uri: string) {
    super(`no resource ${uri}`);
  }
}

const JSON_TYPE = "application/json";

/** The URI of an agent's card. */
export const agentUri = (name: string): string => `agentbus://agents/${encodeURIComponent(name)}`;

/** Every online agent's card, by agent name. */
export function listResources(bus: Bus): McpResource[] {
  const byName = new Map<string, McpResource>();
  for (const agent of bus.discover({ online: true })) {
    if (byName.has(agent.name)) continue;
    byName.set(agent.name, { uri: agentUri(agent.name), name: `agent ${agent.name}`, title: agent.card.name, description: `A2A agent card: ${agent.card.description}`, mimeType: JSON_TYPE });
  }
  return [...byName.values()].sort((a, b) => a.uri.localeCompare(b.uri));
}

/** Tasks and their artifacts' parts, by id. */
export const RESOURCE_TEMPLATES: readonly McpResourceTemplate[] = [
  { uriTemplate: "agentbus://tasks/{taskId}", name: "task", description: "A bus task this caller may read: its state, history and artifacts (A2A Task JSON)", mimeType: JSON_TYPE },
  { uriTemplate: "agentbus://tasks/{taskId}/artifacts/{artifactId}/{part}", name: "task artifact part", description: "One part of a task's artifact: text, a file's bytes, or data as JSON" },
];

/** One part as resource contents: text as text, bytes as a blob, data as JSON, a link as its URL (text/uri-list). */
function partContents(uri: string, part: Part): McpResourceContents {
  if (part.text !== undefined) return { uri, text: part.text, mimeType: part.mediaType ?? "text/plain" };
  if (part.raw !== undefined) return { uri, blob: part.raw, mimeType: part.mediaType ?? "application/octet-stream" };
  if (part.url !== undefined) return { uri, text: part.url, mimeType: "text/uri-list" };
  return { uri, text: JSON.stringify(part.data ?? null), mimeType: JSON_TYPE };
}

/** The bus's task JSON as a resource shows it: without the bus's own metadata. */
function shownTask(task: Task): Record<string, unknown> {
  const { submitter: _s, caller: _c, agent: _a, ...metadata } = task.metadata;
  return { ...task, metadata };
}

/**
 * Reads one resource for `caller` (tasks of another caller, or of no one it
 * may read, are not found).
 *
 * @throws {ResourceNotFound} for a URI that names nothing this caller may read.
 */
export async function readResource(bus: Bus, uri: string, caller?: string): Promise<McpResourceContents[]> {
  const agent = /^agentbus:\/\/agents\/([^/]+)$/.exec(uri);
  if (agent) {
    const name = decodeURIComponent(agent[1]!);
    const info = preferOnline(bus.discover({ name }));
    if (!info) throw new ResourceNotFound(uri);
    // As registered: signed with the agent's own key.
    return [{ uri, mimeType: JSON_TYPE, text: JSON.stringify(info.card) }];
  }
  const task = /^agentbus:\/\/tasks\/([A-Za-z0-9_-]+)(?:\/artifacts\/([^/]+)\/(\d+))?$/.exec(uri);
  if (!task) throw new ResourceNotFound(uri);
  let found: Task;
  try {
    found = await bus.task(task[1]!, { caller });
  } catch (err) {
    if (isAgentBusError(err, "TASK_NOT_FOUND") || isAgentBusError(err, "INVALID_INPUT")) throw new ResourceNotFound(uri);
    throw err;
  }
  if (task[2] === undefined) return [{ uri, mimeType: JSON_TYPE, text: JSON.stringify(shownTask(found)) }];
  const artifact = found.artifacts.find((a) => a.artifactId === decodeURIComponent(task[2]!));
  const part = artifact?.parts[Number(task[3])];
  if (!part) throw new ResourceNotFound(uri);
  return [partContents(uri, part)];
}
