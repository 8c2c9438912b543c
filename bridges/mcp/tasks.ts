import { MissingRequiredClientCapabilityError, ProtocolError, ProtocolErrorCode, inputRequired, type InputRequest, type Server, type ServerContext } from "@modelcontextprotocol/server";
import { isAgentBusError, isFinal, type Bus, type Task, type TaskState } from "../../core/internal.js";
import { questionOf, resultOf, type ToolAnswer, type ToolQuestion } from "./tools.js";

/**
 * MCP's tasks extension (`io.modelcontextprotocol/tasks`, 2026-07-28) on
 * bus tasks: a `tools/call` whose task does not end quickly answers with
 * the task (`resultType: "task"`), and `tasks/get`, `tasks/update`,
 * `tasks/cancel` read, answer and cancel it. The state is the bus's
 * (JetStream): any replica, and a restarted bridge, serves the same task.
 */
export const TASKS_EXTENSION = "io.modelcontextprotocol/tasks";

/** How long a `tools/call` of a declaring client waits for its task before answering with the task. */
export const DETACH_AFTER_MS = 1_000;

/** How often a client should poll a task (`pollIntervalMs`). */
const POLL_INTERVAL_MS = 500;

/** How long a task stays readable (the task snapshots' retention). */
const TASK_TTL_MS = 7 * 24 * 3_600_000;

/** The metadata key of an MCP task's creation time (ISO 8601), stored with the bus task. */
export const CREATED_AT_KEY = "mcp.createdAt";

/** Whether the request's client declared the tasks extension (on this request: 2026-07-28 capabilities are per request). */
export function declaresTasks(server: Server): boolean {
  const extensions = (server.getClientCapabilities() as { extensions?: Record<string, unknown> } | undefined)?.extensions;
  return extensions?.[TASKS_EXTENSION] !== undefined;
}

/** MCP's task status of a bus task state. */
function statusOf(state: TaskState): "working" | "input_required" | "completed" | "cancelled" {
  if (state === "TASK_STATE_INPUT_REQUIRED" || state === "TASK_STATE_AUTH_REQUIRED") return "input_required";
  if (state === "TASK_STATE_CANCELED") return "cancelled";
  // A failed or rejected task is a tool that reported an error: `completed` with `result.isError` (`failed` is for JSON-RPC errors).
  if (isFinal(state)) return "completed";
  return "working";
}

/** The task fields every task shape carries. */
function taskInfo(task: Task): Record<string, unknown> {
  const createdAt = typeof task.metadata[CREATED_AT_KEY] === "string" ? (task.metadata[CREATED_AT_KEY] as string) : task.status.timestamp;
  const message = task.status.message?.parts.map((p) => p.text ?? "").join("").trim();
  return {
    taskId: task.id,
    status: statusOf(task.status.state),
    ...(message && { statusMessage: message }),
    createdAt,
    lastUpdatedAt: task.status.timestamp,
    ttlMs: TASK_TTL_MS,
    pollIntervalMs: POLL_INTERVAL_MS,
  };
}

/** A `CreateTaskResult`: the task, flat, `resultType: "task"`. */
export function createTaskResult(task: Task): Record<string, unknown> {
  return { resultType: "task", ...taskInfo(task) };
}

/** The elicitation request (form mode) that asks a task's question, in an input-required result or a waiting task. */
export const elicitationOf = (question: ToolQuestion): InputRequest => inputRequired.elicit({ message: question.message, requestedSchema: question.requestedSchema as never });

/** The key of the request a task waiting for input asks: unique per turn (the sequence of the event that asked). */
const inputKey = (sequence: number | undefined) => `input-${sequence ?? 0}`;

/** A permissive Standard Schema: these methods' params are checked by the handlers. */
const anything = { "~standard": { version: 1, vendor: "agentbus", validate: (value: unknown) => ({ value }) } } as const;

/**
 * Registers `tasks/get`, `tasks/update` and `tasks/cancel` on a 2026-07-28
 * server for `bus` and `caller` (tasks of another caller are unknown). A
 * client that did not declare the extension on the request gets -32021;
 * an unknown task -32602.
 */
export function serveTasks(server: Server, bus: Bus, caller: string | undefined): void {
  const open = async (params: unknown) => {
    if (!declaresTasks(server)) {
      throw new MissingRequiredClientCapabilityError({ requiredCapabilities: { extensions: { [TASKS_EXTENSION]: {} } } } as never, `this method needs the ${TASKS_EXTENSION} extension`);
    }
    const taskId = (params as { taskId?: unknown } | undefined)?.taskId;
    if (typeof taskId !== "string" || taskId === "") throw new ProtocolError(ProtocolErrorCode.InvalidParams, "taskId is required");
    try {
      return await bus.taskHandle(taskId, { caller });
    } catch (err) {
      if (isAgentBusError(err, "TASK_NOT_FOUND") || isAgentBusError(err, "INVALID_INPUT")) throw new ProtocolError(ProtocolErrorCode.InvalidParams, `unknown task ${taskId}`);
      throw err;
    }
  };
  const unknown = (err: unknown, taskId: string) => (isAgentBusError(err, "TASK_NOT_FOUND") ? new ProtocolError(ProtocolErrorCode.InvalidParams, `unknown task ${taskId}`) : err);

  server.setRequestHandler("tasks/get" as never, { params: anything, result: anything } as never, (async (params: { taskId: string }, ctx: ServerContext) => {
    const handle = await open(params);
    const task = await handle.get().catch((err: unknown) => Promise.reject(unknown(err, params.taskId)));
    const info = taskInfo(task);
    if (info.status === "completed") return { resultType: "complete", ...info, result: resultOf(task) };
    if (info.status === "input_required") {
      return { resultType: "complete", ...info, inputRequests: { [inputKey(await handle.lastSequence())]: elicitationOf(questionOf(task)) } };
    }
    return { resultType: "complete", ...info };
  }) as never);

  server.setRequestHandler("tasks/update" as never, { params: anything, result: anything } as never, (async (params: { taskId: string; inputResponses?: Record<string, unknown> }, ctx: ServerContext) => {
    const handle = await open(params);
    const task = await handle.get().catch((err: unknown) => Promise.reject(unknown(err, params.taskId)));
    // Only the outstanding request's answer counts; other keys (never issued, answered, superseded) are ignored.
    // The SDK lifts `inputResponses` out of the params into the context (as for any retried request).
    const responses = ctx.mcpReq.inputResponses ?? params.inputResponses;
    const answer = task.status.state === "TASK_STATE_INPUT_REQUIRED" ? (responses?.[inputKey(await handle.lastSequence())] as ToolAnswer | undefined) : undefined;
    if (answer?.action === "accept") {
      await bus.submit(task.metadata.capability, questionOf(task).answerOf(answer.content ?? {}), { taskId: task.id, caller });
    } else if (answer) {
      await handle.cancel().catch(() => {});
    }
    return { resultType: "complete" };
  }) as never);

  server.setRequestHandler("tasks/cancel" as never, { params: anything, result: anything } as never, (async (params: { taskId: string }, ctx: ServerContext) => {
    const handle = await open(params);
    // Idempotent: a task that has ended acknowledges too.
    await handle.cancel().catch((err: unknown) => {
      if (isAgentBusError(err, "TASK_NOT_FOUND")) throw unknown(err, params.taskId);
    });
    return { resultType: "complete" };
  }) as never);
}
