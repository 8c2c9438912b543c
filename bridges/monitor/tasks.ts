/**
 * The monitor's task routes: listings with filters and a summary of each
 * task (`view`), one task with its events, a task's tree of sub-tasks,
 * cancel and retry. Every route acts as the request's caller and sees only
 * the tasks it may (see `monitor`).
 */
import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AgentBusError, BLOB_MEDIA_TYPE, ENCRYPTED_MEDIA_TYPE, isAgentBusError, isEncryptedPart, isTerminal, TASK_STATES, type Bus, type Message, type Part, type Task, type TaskQuery, type TaskState } from "../../core/internal.js";
import type { EventReader, MonitorEvent } from "../events/index.js";

/** A task's id as the routes accept it (anything else is an unknown task). */
export const TASK_ID = /^[A-Za-z0-9_-]+$/;

/** Longest input preview, characters. */
const INPUT_PREVIEW = 200;
/** Most tasks a tree holds. */
const TREE_NODES = 200;
/** Event logs of a tree read at once. */
const TREE_READS = 8;

/** A summary of a task for lists and waterfalls, beside the A2A task. */
export interface TaskView {
  capability: string;
  /** The agent that served it (`metadata.agent`), with its registered name when the registry knows it. */
  agent?: { id: string; name?: string };
  /**
   * When the task was created (ISO 8601): `metadata.createdAt`, or for a
   * schedule's run its tick time; for a task created before creation
   * times were recorded, its first stored event's time where the route
   * reads its events, else its last status change.
   */
  createdAt: string;
  /** Its last status change (ISO 8601). */
  updatedAt: string;
  /** When it ended (ISO 8601), for a task in a terminal state. */
  endedAt?: string;
  /**
   * Its first user message in at most 200 characters: text parts joined
   * by spaces, data parts as compact JSON, other parts named in brackets
   * (`[file name]`, `[12345 bytes]` for a part kept in the object store,
   * `[encrypted]` for one this monitor may not open).
   */
  input: string;
  /** The task it was submitted for (`metadata.parent`). */
  parent?: string;
  depth?: number;
  /** The task it submits again (`metadata.retryOf`). */
  retryOf?: string;
}

/** A task with its {@link TaskView}. */
export type ViewedTask = Task & { view: TaskView };

/** One task of a tree: its parent's id (absent for the root) and its depth below the root. */
export interface TreeNode {
  task: ViewedTask;
  parentId?: string;
  depth: number;
  events: MonitorEvent[];
}

/** A part as one line of a preview. */
function partPreview(p: Part): string {
  if (typeof p.text === "string") return p.text;
  if (p.mediaType === ENCRYPTED_MEDIA_TYPE || isEncryptedPart(p)) return "[encrypted]";
  if (p.mediaType === BLOB_MEDIA_TYPE && typeof p.data === "object" && p.data !== null) {
    const size = (p.data as { size?: unknown }).size;
    return typeof size === "number" ? `[${size} bytes]` : "[stored part]";
  }
  if (p.data !== undefined) return JSON.stringify(p.data) ?? "";
  return `[${p.filename ?? p.mediaType ?? (p.url !== undefined ? "url" : "file")}]`;
}

/**
 * `message` in at most 200 characters: text parts joined by spaces, data
 * parts as compact JSON, other parts named in brackets (`[file name]`,
 * `[12345 bytes]` for a part kept in the object store, `[encrypted]`);
 * empty for none.
 */
export function messagePreview(message: Message | undefined): string {
  const text = (message?.parts ?? []).map(partPreview).join(" ");
  if (text.length <= INPUT_PREVIEW) return text;
  // Cut between characters, not inside a surrogate pair.
  const cut = /[\uD800-\uDBFF]/.test(text[INPUT_PREVIEW - 2]!) ? INPUT_PREVIEW - 2 : INPUT_PREVIEW - 1;
  return `${text.slice(0, cut)}…`;
}

/** The first user message of `task`, previewed (see {@link TaskView.input}). */
export function inputPreview(task: Task): string {
  return messagePreview(task.history.find((m) => m.role === "ROLE_USER"));
}

const iso = (ms: unknown): string | undefined => (typeof ms === "number" && Number.isFinite(ms) ? new Date(ms).toISOString() : undefined);

/** `task` with its {@link TaskView}; `events`: its stored events, when the route read them. */
export function withView(bus: Bus, task: Task, events?: readonly MonitorEvent[]): ViewedTask {
  const m = task.metadata;
  const agentId = typeof m.agent === "string" ? m.agent : undefined;
  const name = agentId === undefined ? undefined : bus.registry.get(agentId)?.name;
  const view: TaskView = {
    capability: m.capability,
    ...(agentId !== undefined && { agent: { id: agentId, ...(name !== undefined && { name }) } }),
    createdAt: iso(m.createdAt) ?? iso(m.scheduledAt) ?? events?.[0]?.time ?? task.status.timestamp,
    updatedAt: task.status.timestamp,
    ...(isTerminal(task.status.state) && { endedAt: task.status.timestamp }),
    input: inputPreview(task),
    ...(typeof m.parent === "string" && { parent: m.parent }),
    ...(typeof m.depth === "number" && { depth: m.depth }),
    ...(typeof m.retryOf === "string" && { retryOf: m.retryOf }),
  };
  return { ...task, view };
}

/** The list of a comma-separated query parameter, if given. */
export const listOf = (v: string | undefined): string[] | undefined => (v ? v.split(",").map((s) => s.trim()).filter(Boolean) : undefined);

/** The states of a `?state=` list; `INVALID_INPUT` for a name that is no state. */
export function parseStates(v: string | undefined): TaskState[] | undefined {
  const states = listOf(v);
  for (const s of states ?? []) {
    if (!TASK_STATES.includes(s as TaskState)) throw new AgentBusError("INVALID_INPUT", `unknown state ${s}; one of ${TASK_STATES.join(", ")}`);
  }
  return states as TaskState[] | undefined;
}

/** An integer query parameter in `[min, max]`, if given; `INVALID_INPUT` otherwise. */
export function parseInteger(v: string | undefined, what: string, min: number, max: number): number | undefined {
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new AgentBusError("INVALID_INPUT", `${what} must be an integer from ${min} to ${max}`);
  return n;
}

/** Query of `GET /v1/tasks`. */
interface ListQuery {
  state?: string;
  capability?: string;
  agent?: string;
  q?: string;
  parent?: string;
  contextId?: string;
  pageSize?: string;
  pageToken?: string;
}

/** What the task routes share with the rest of the monitor. */
export interface TaskRoutesContext {
  /** The connection a request acts as; answers 401 and returns undefined without one. */
  callerOf(req: FastifyRequest, reply: FastifyReply): Bus | undefined;
  reader: EventReader;
}

/** A task id from a route's path: one that cannot be a task's is an unknown task. */
function taskIdOf(id: string): string {
  if (!TASK_ID.test(id)) throw new AgentBusError("TASK_NOT_FOUND", `task ${id} not found`);
  return id;
}

/**
 * The task routes (see `monitor` for scoping and errors):
 *
 * - `GET /v1/tasks`: the caller's tasks, newest status first, each with
 *   its `view`. Filters, each optional, all of them applying: `state` (a
 *   comma list: any of these states), `capability`, `agent` (an agent id,
 *   or a name: any registered agent of that name, online or not; matches
 *   the agent that served the task), `parent` (the direct children of
 *   that task id), `contextId`, and `q` (case-insensitive text in the
 *   input preview, capability, serving agent's name, task id).
 *   Filters apply before paging: `totalSize` counts the tasks that pass
 *   them, a page holds up to `pageSize` (1..1000, default 50) of those,
 *   and `nextPageToken` continues the same query (give it the same
 *   filters).
 * - `GET /v1/tasks/:id`: `{task, events}`, the task with its `view`.
 * - `GET /v1/tasks/:id/tree`: `{root, nodes}`: the task and its
 *   descendants, depth first (children in creation order), at most 200
 *   nodes, each with its stored events. Children are the tasks whose
 *   `metadata.parent` names a node (and those a fan-out parent lists in
 *   `metadata.children`), found among the tasks the request's connection
 *   may list (an identity that serves an agent or holds a task grant
 *   lists every task that allows; another lists its own), each kept only
 *   when the caller may see it (the tasks submitted for a task it may see
 *   are its to see). Tasks as stored: large parts stay references.
 * - `POST /v1/tasks/:id/cancel`: `{task}`, canceled (`bus.taskHandle(id).cancel()`):
 *   409 `NOT_CANCELABLE` when it already ended; 404 `TASK_NOT_FOUND` for a
 *   task the caller sees only through its parent (the bus lets only its
 *   submitter, its agent and identities granted its capability cancel it:
 *   cancel the parent).
 * - `POST /v1/tasks/:id/retry`: 201 `{task}`: a new task of the same
 *   capability, first user message (a new message id) and context, with
 *   the same priority (and encrypted when it was), submitted as the caller
 *   with `metadata.retryOf` = `:id`. For any task the caller may see; 400
 *   `INVALID_INPUT` when its input is encrypted for others than this
 *   monitor's identity.
 */
export function taskRoutes(app: FastifyInstance, { callerOf, reader }: TaskRoutesContext): void {
  app.get<{ Querystring: ListQuery }>("/v1/tasks", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const { state, capability, agent, q, parent, contextId, pageSize, pageToken } = req.query;
    const query: TaskQuery = {
      state: parseStates(state),
      capability: capability || undefined,
      agent: agent ? agentIds(on, agent) : undefined,
      parent: parent || undefined,
      contextId: contextId || undefined,
      pageSize: parseInteger(pageSize, "pageSize", 1, 1000),
      pageToken: pageToken || undefined,
      caller: req.caller?.name,
      ...(q && { where: searching(on, q) }),
    };
    const page = await on.tasks(query);
    return { ...page, tasks: page.tasks.map((t) => withView(on, t)) };
  });

  app.get<{ Params: { id: string } }>("/v1/tasks/:id", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const id = taskIdOf(req.params.id);
    const task = await on.task(id, { caller: req.caller?.name });
    const events = await reader.log(on, id, task.metadata.capability);
    return { task: withView(on, task, events), events };
  });

  app.get<{ Params: { id: string } }>("/v1/tasks/:id/tree", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const id = taskIdOf(req.params.id);
    return { root: id, nodes: await tree(on, reader, id, req.caller?.name) };
  });

  app.post<{ Params: { id: string } }>("/v1/tasks/:id/cancel", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const handle = await on.taskHandle(taskIdOf(req.params.id), { caller: req.caller?.name });
    return { task: withView(on, await handle.cancel()) };
  });

  app.post<{ Params: { id: string } }>("/v1/tasks/:id/retry", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const id = taskIdOf(req.params.id);
    const caller = req.caller?.name;
    const original = await on.task(id, { caller });
    const first = original.history.find((m) => m.role === "ROLE_USER");
    if (!first) throw new AgentBusError("INVALID_INPUT", `task ${id} has no input to submit again`);
    if (first.parts.some(isEncryptedPart)) throw new AgentBusError("INVALID_INPUT", `the input of task ${id} is encrypted for others: it cannot be submitted again here`);
    const input: Message = {
      messageId: randomUUID(),
      role: "ROLE_USER",
      parts: first.parts,
      ...(first.metadata && { metadata: first.metadata }),
      ...(first.extensions && { extensions: first.extensions }),
    };
    const m = original.metadata;
    const handle = await on.submit(m.capability, input, {
      contextId: original.contextId,
      caller,
      retryOf: id,
      ...((m.priority === "high" || m.priority === "low") && { priority: m.priority }),
      ...(m.encrypted !== undefined && { encrypt: true }),
    });
    const task = handle.submitted ?? (await handle.get());
    return reply.code(201).send({ task: withView(on, task) });
  });
}

/** The agent ids `agent` names: itself (an id), and every registered agent whose name it is. */
function agentIds(bus: Bus, agent: string): string[] {
  return [agent, ...bus.discover({ name: agent }).map((a) => a.id)];
}

/** The `q` filter: case-insensitive text in the input preview, capability, serving agent's name, task id. */
function searching(bus: Bus, q: string): (task: Task) => boolean {
  const needle = q.toLowerCase();
  return (task) => {
    const agent = typeof task.metadata.agent === "string" ? task.metadata.agent : undefined;
    const haystack = [task.id, task.metadata.capability, agent && bus.registry.get(agent)?.name, inputPreview(task)];
    return haystack.some((s) => typeof s === "string" && s.toLowerCase().includes(needle));
  };
}

/**
 * Task `id` and its descendants, depth first, at most {@link TREE_NODES}
 * (see `GET /v1/tasks/:id/tree`): one listing per level of the tree.
 */
async function tree(bus: Bus, reader: EventReader, id: string, caller: string | undefined): Promise<TreeNode[]> {
  const root = await (await bus.taskHandle(id, { caller })).stored();
  const found = new Map<string, { task: Task; parentId?: string; depth: number }>([[id, { task: root, depth: 0 }]]);
  const children = new Map<string, Task[]>();
  let level = [root];
  for (let depth = 1; level.length > 0 && found.size < TREE_NODES; depth++) {
    const parents = new Set(level.map((t) => t.id));
    // Children by their parent field, and those a fan-out parent names.
    const listed = (await bus.tasks({ parent: [...parents], pageSize: 1000 })).tasks;
    const named = level.flatMap((t) => (Array.isArray(t.metadata.children) ? (t.metadata.children as Array<{ id?: unknown }>).map((c) => c.id) : []));
    const candidates = new Map<string, string | undefined>();
    for (const t of listed) if (typeof t.metadata.parent === "string" && parents.has(t.metadata.parent)) candidates.set(t.id, t.metadata.parent);
    for (const childId of named) if (typeof childId === "string" && TASK_ID.test(childId) && !candidates.has(childId)) candidates.set(childId, undefined);
    const next: Task[] = [];
    for (const childId of candidates.keys()) {
      if (found.has(childId) || found.size + next.length >= TREE_NODES) continue;
      // The caller's view decides: what the connection listed may be another caller's.
      const task = await bus
        .taskHandle(childId, { caller })
        .then((h) => h.stored())
        .catch((err: unknown) => {
          if (isAgentBusError(err, "TASK_NOT_FOUND")) return undefined;
          throw err;
        });
      const parentId = task?.metadata.parent;
      if (!task || typeof parentId !== "string" || !parents.has(parentId)) continue;
      next.push(task);
      found.set(task.id, { task, parentId, depth });
      children.set(parentId, [...(children.get(parentId) ?? []), task]);
    }
    level = next;
  }
  // Depth first, each node's children oldest first.
  const created = (t: Task) => (typeof t.metadata.createdAt === "number" ? t.metadata.createdAt : Date.parse(t.status.timestamp));
  const order: string[] = [];
  const visit = (taskId: string) => {
    order.push(taskId);
    for (const c of (children.get(taskId) ?? []).sort((a, b) => created(a) - created(b) || a.id.localeCompare(b.id))) visit(c.id);
  };
  visit(id);
  const nodes: TreeNode[] = new Array(order.length);
  for (let i = 0; i < order.length; i += TREE_READS) {
    await Promise.all(order.slice(i, i + TREE_READS).map(async (taskId, k) => {
      const { task, parentId, depth } = found.get(taskId)!;
      const events = await reader.log(bus, taskId, task.metadata.capability);
      nodes[i + k] = { task: withView(bus, task, events), ...(parentId !== undefined && { parentId }), depth, events };
    }));
  }
  return nodes;
}
