import { createHash, randomBytes } from "node:crypto";
import type { Message, Part } from "./protocol.js";

/** A2A v1.0 task states (JSON form). */
export type TaskState =
  | "TASK_STATE_SUBMITTED"
  | "TASK_STATE_WORKING"
  | "TASK_STATE_COMPLETED"
  | "TASK_STATE_FAILED"
  | "TASK_STATE_CANCELED"
  | "TASK_STATE_REJECTED"
  | "TASK_STATE_INPUT_REQUIRED"
  | "TASK_STATE_AUTH_REQUIRED";

/** Every task state, in the order A2A lists them. */
export const TASK_STATES: readonly TaskState[] = [
  "TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "TASK_STATE_COMPLETED", "TASK_STATE_FAILED",
  "TASK_STATE_CANCELED", "TASK_STATE_REJECTED", "TASK_STATE_INPUT_REQUIRED", "TASK_STATE_AUTH_REQUIRED",
];

/**
 * How urgent a durable task is. A worker takes the highest level waiting
 * first, with a share rule so none starves: of every 7 tasks a busy worker
 * takes while several levels wait, 4 are high, 2 normal and 1 low.
 */
export type TaskPriority = "high" | "normal" | "low";

/** The priorities, highest first. */
export const TASK_PRIORITIES: readonly TaskPriority[] = ["high", "normal", "low"];

/** A task's priority (`metadata.priority`; absent: normal). */
export function priorityOf(task: Pick<Task, "metadata">): TaskPriority {
  const p = task.metadata.priority;
  return p === "high" || p === "low" ? p : "normal";
}

export interface TaskStatus {
  state: TaskState;
  message?: Message;
  /** ISO 8601 */
  timestamp: string;
}

export interface Artifact {
  artifactId: string;
  name?: string;
  description?: string;
  parts: Part[];
  metadata?: Record<string, unknown>;
}

/** An A2A task snapshot, as stored in `mesh_<t>_tasks`. */
export interface Task {
  id: string;
  contextId: string;
  status: TaskStatus;
  artifacts: Artifact[];
  history: Message[];
  metadata: TaskMetadata;
}

/** What the bus keeps about a task besides the A2A fields. */
export interface TaskMetadata {
  /** Capability that runs the task. */
  capability: string;
  /** Identity that submitted it (its events are MACed for this identity). */
  submitter: string;
  /**
   * Behind a bridge: the caller the submitter acted for (an API key's name,
   * `oidc:<sub>` for a bearer token). Only the same caller may then read,
   * follow, list or cancel the task through that identity.
   */
  caller?: string;
  /** Agent identity that last worked on it. */
  agent?: string;
  /** Calling task, for agent-to-agent submissions. */
  parent?: string;
  depth?: number;
  /**
   * The end-to-end encryption scheme (`E2E_SCHEME`) when the task was
   * submitted with `encrypt`: its history, status messages and artifacts
   * are encrypted parts that only its parties open.
   */
  encrypted?: string;
  /** A delayed task's time (`runAt`/`delayMs` of the submit), ms since the epoch: it runs then, not before. */
  runAt?: number;
  /**
   * The task's deadline (`deadline`/`ttlMs` of the submit), ms since the
   * epoch: not started by then, it ends FAILED; still running then, it is
   * canceled.
   */
  deadline?: number;
  /**
   * When the task was created (its SUBMITTED snapshot written), ms since
   * the epoch, by the creator's clock. Absent from tasks created by
   * earlier versions.
   */
  createdAt?: number;
  /** The task this one submits again (`SubmitOptions.retryOf`). */
  retryOf?: string;
  /** Whatever else the submitter stored with the task (`SubmitOptions.metadata`). */
  [key: string]: unknown;
}

export interface TaskStatusUpdateEvent {
  taskId: string;
  contextId: string;
  status: TaskStatus;
  metadata?: Record<string, unknown>;
}

export interface TaskArtifactUpdateEvent {
  taskId: string;
  contextId: string;
  artifact: Artifact;
  append: boolean;
  lastChunk: boolean;
  metadata?: Record<string, unknown>;
}

/** One event of a task, in A2A's `StreamResponse` JSON form. */
export type TaskEvent =
  | { statusUpdate: TaskStatusUpdateEvent }
  | { artifactUpdate: TaskArtifactUpdateEvent }
  | { message: Message };

const TERMINAL = new Set<TaskState>(["TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"]);
const INTERRUPTED = new Set<TaskState>(["TASK_STATE_INPUT_REQUIRED", "TASK_STATE_AUTH_REQUIRED"]);

/** COMPLETED, FAILED, CANCELED, REJECTED: nothing follows. */
export const isTerminal = (s: TaskState): boolean => TERMINAL.has(s);
/** INPUT_REQUIRED, AUTH_REQUIRED: waits for the caller. */
export const isInterrupted = (s: TaskState): boolean => INTERRUPTED.has(s);
/** Where `events()` and `result()` stop. */
export const isFinal = (s: TaskState): boolean => TERMINAL.has(s) || INTERRUPTED.has(s);

/**
 * States only move forward: nothing leaves a terminal state, SUBMITTED is
 * never re-entered, and an interrupted task resumes only through WORKING
 * (or ends).
 */
export function canMove(from: TaskState, to: TaskState): boolean {
  if (isTerminal(from) || to === "TASK_STATE_SUBMITTED") return false;
  return true;
}

/** The task after one event (pure: the stored snapshot follows events by CAS). */
export function applyEvent(task: Task, event: TaskEvent): Task {
  if ("statusUpdate" in event) {
    const { status } = event.statusUpdate;
    return { ...task, status, history: status.message ? [...task.history, status.message] : task.history };
  }
  if ("artifactUpdate" in event) {
    const { artifact, append } = event.artifactUpdate;
    const i = task.artifacts.findIndex((a) => a.artifactId === artifact.artifactId);
    const artifacts = [...task.artifacts];
    if (i < 0) artifacts.push(artifact);
    else artifacts[i] = append ? { ...artifacts[i]!, parts: [...artifacts[i]!.parts, ...artifact.parts] } : artifact;
    return { ...task, artifacts };
  }
  return { ...task, history: [...task.history, event.message] };
}

/** The state an event moves the task to, if it is a status update. */
export const stateOf = (event: TaskEvent): TaskState | undefined => ("statusUpdate" in event ? event.statusUpdate.status.state : undefined);

/**
 * Where a reader following one task's events stops: at a terminal state, or
 * at an interrupted one once it has caught up (`pending` later events: 0),
 * since a resumed task goes on past its earlier interruptions; with
 * `untilTerminal`, only at a terminal state (it follows the next turns).
 */
export const endsFollow = (event: TaskEvent, pending: number, untilTerminal = false): boolean => {
  const state = stateOf(event);
  return state !== undefined && (isTerminal(state) || (!untilTerminal && isInterrupted(state) && pending === 0));
};

/**
 * The ACL capability that grants rights over other identities' tasks of
 * capability `cap`: reading, following, listing and cancelling them. A rule
 * `{source, target, capabilities: ["task.<cap>"]}` grants it for the tasks
 * that agent `target` serves (`*`: any agent, and tasks no worker took yet).
 */
export const taskRight = (cap: string): string => `task.${cap}`;

/** A status object stamped now. */
export const statusNow = (state: TaskState, message?: Message): TaskStatus => ({ state, ...(message && { message }), timestamp: new Date().toISOString() });

/** A status event of `task` moving to `state` now (with an optional message). */
export const statusEvent = (task: Pick<Task, "id" | "contextId">, state: TaskState, message?: Message): TaskEvent => ({
  statusUpdate: { taskId: task.id, contextId: task.contextId, status: statusNow(state, message) },
});

/** What an artifact event carries besides its parts (`ctx.artifact`'s options, with the id chosen). */
export interface ArtifactFields {
  artifactId: string;
  name?: string;
  description?: string;
  metadata?: Record<string, unknown>;
  /** Adds the parts to the artifact sent before under the same id. */
  append?: boolean;
  lastChunk?: boolean;
}

/** An artifact event of `task` (or one chunk of an artifact). */
export function artifactEvent(task: Pick<Task, "id" | "contextId">, parts: Part[], o: ArtifactFields): TaskEvent {
  const artifact = { artifactId: o.artifactId, parts, ...(o.name && { name: o.name }), ...(o.description && { description: o.description }), ...(o.metadata && { metadata: o.metadata }) };
  return { artifactUpdate: { taskId: task.id, contextId: task.contextId, artifact, append: o.append ?? false, lastChunk: o.lastChunk ?? true } };
}

/**
 * A new task id for `submitter`: 128 random bits, then 64 bits of a hash
 * binding them to the submitter's id, in hex (48 digits). Knowing a task's
 * id means having been told it, and a snapshot that names another
 * submitter for it is refused (see {@link taskIdBinds}).
 */
export function newTaskId(submitter: string): string {
  const random = randomBytes(16).toString("hex");
  return random + idBinding(random, submitter);
}

const idBinding = (random: string, submitter: string): string => createHash("sha256").update(`agentbus task id v1\n${submitter}\n${random}`).digest("hex").slice(0, 16);
const BOUND_ID = /^[0-9a-f]{48}$/;

/**
 * Whether task id `id` was made by {@link newTaskId} for `submitter`: true
 * or false for an id of that form, undefined for any other (an id the
 * submitter chose, which binds nobody).
 */
export function taskIdBinds(id: string, submitter: string): boolean | undefined {
  if (!BOUND_ID.test(id)) return undefined;
  return idBinding(id.slice(0, 32), submitter) === id.slice(32);
}
