import {
  AgentCard as AgentCardCodec,
  ListTasksRequest as ListTasksRequestCodec,
  ListTasksResponse as ListTasksResponseCodec,
  Message as MessageCodec,
  StreamResponse as StreamResponseCodec,
  Task as TaskCodec,
  type AgentCard as SdkAgentCard,
  type GetTaskRequest,
  type CancelTaskRequest,
  type ListTasksRequest,
  type ListTasksResponse,
  Role,
  type Message as SdkMessage,
  type SendMessageRequest,
  type StreamResponse,
  type SubscribeToTaskRequest,
  type Task as SdkTask,
  type TaskPushNotificationConfig,
  type ListTaskPushNotificationConfigsResponse,
  type GetTaskPushNotificationConfigRequest,
  type DeleteTaskPushNotificationConfigRequest,
  type ListTaskPushNotificationConfigsRequest,
  TaskPushNotificationConfig as PushConfigCodec,
  ListTaskPushNotificationConfigsResponse as PushConfigListCodec,
} from "@a2a-js/sdk";
import { PUSH_METADATA_KEY, type PushConfig, type PushNotifications } from "./push.js";
import { ExtendedAgentCardNotConfiguredError, PushNotificationNotSupportedError, RequestMalformedError, TaskNotCancelableError, TaskNotFoundError, UnsupportedOperationError } from "@a2a-js/sdk/errors";
import type { A2ARequestHandler } from "@a2a-js/sdk/server";
import { TASK_STATES, checkId, isAgentBusError, isTerminal, SpanAttr, type AgentCard, type Bus, type Message, type StoredEvent, type Task, type TaskHandle, type TaskState, type Traced } from "../../core/internal.js";

/**
 * The metadata key of a streamed response's cursor: the JetStream sequence
 * of the event in the task's events stream (of a task response, the last
 * event it includes), also the SSE event's `id`. A reconnecting client
 * gives it back as `Last-Event-ID` to resume after it.
 */
export const CURSOR_KEY = "agentbus.cursor";

/** A stream response (task event JSON, or `{task}`) with its cursor in its payload's metadata. */
function withCursor(response: Record<string, unknown>, sequence: number): StreamResponse {
  const [kind, payload] = Object.entries(response)[0] as [string, { metadata?: Record<string, unknown> }];
  return StreamResponseCodec.fromJSON({ [kind]: { ...payload, metadata: { ...payload.metadata, [CURSOR_KEY]: String(sequence) } } });
}

/**
 * The agent's message when a completed task is nothing but that answer:
 * no artifact, no status message, and the last message of its history the
 * agent's (`ctx.message`, or a remote agent that answered with a Message).
 */
function bareReply(task: Task): Message | undefined {
  if (task.status.state !== "TASK_STATE_COMPLETED" || task.artifacts.length > 0 || task.status.message) return undefined;
  const last = task.history.at(-1);
  return last?.role === "ROLE_AGENT" ? { ...last, taskId: task.id, contextId: task.contextId } : undefined;
}

/** `historyLength` as given: absent, or a count (RequestMalformedError otherwise). */
function checkHistoryLength(n: number | undefined): number | undefined {
  if (n !== undefined && (!Number.isInteger(n) || n < 0)) throw new RequestMalformedError(`historyLength ${n} is not a count`);
  return n;
}

/** The task with its last `n` messages of history (all when `n` is absent, none for 0), as `historyLength` asks. */
function withHistory(task: Task, n: number | undefined): Task {
  return n === undefined ? task : { ...task, history: n === 0 ? [] : task.history.slice(-n) };
}

/**
 * A message as A2A requires it (a2a.proto: `message_id`, `role` and
 * `parts` REQUIRED, at least one part, each with content), or
 * RequestMalformedError saying what is missing.
 */
function checkMessage(message: SdkMessage | undefined): SdkMessage {
  if (!message) throw new RequestMalformedError("message is required");
  if (!message.messageId) throw new RequestMalformedError("message.messageId is required");
  if (message.role !== Role.ROLE_USER && message.role !== Role.ROLE_AGENT) throw new RequestMalformedError("message.role must be ROLE_USER or ROLE_AGENT");
  if (!Array.isArray(message.parts) || message.parts.length === 0) throw new RequestMalformedError("message.parts must hold at least one part");
  const empty = message.parts.findIndex((p) => !p?.content);
  if (empty >= 0) throw new RequestMalformedError(`message.parts[${empty}] has no content (text, raw, url or data)`);
  return message;
}

/** Bus internals that A2A callers need not see. */
function toSdkTask(task: Task): SdkTask {
  const { submitter: _s, agent: _a, caller: _c, ...metadata } = task.metadata;
  return TaskCodec.fromJSON({ ...task, metadata });
}

/** `TaskNotFoundError` for an id no task can have (the bus's ids are subject tokens), before any read. */
function checkTaskId(id: string | undefined): string {
  try {
    return checkId(id ?? "", "task id");
  } catch {
    throw new TaskNotFoundError(`task ${JSON.stringify(id ?? "")} not found`);
  }
}

/** Bus errors as the SDK's A2A errors (the transport maps those to JSON-RPC codes). */
function a2aError(err: unknown, taskId?: string): unknown {
  if (isAgentBusError(err, "TASK_NOT_FOUND")) return new TaskNotFoundError(`task ${taskId ?? ""} not found`);
  if (isAgentBusError(err, "NOT_CANCELABLE") || isAgentBusError(err, "TASK_FINISHED")) return new TaskNotCancelableError(err.message);
  if (isAgentBusError(err, "INVALID_INPUT")) return new RequestMalformedError(err.message);
  return err;
}

/**
 * The A2A request handler of one route, backed by the bus: no task state
 * here. Sends become `bus.submit`, streams relay the task's event subject,
 * reads go to the task snapshots. Another bridge process serves the same
 * tasks the same way.
 *
 * Every task operation is scoped to the request's caller (`caller`: the
 * API key's name, `oidc:<sub>`): tasks are submitted with it, and another
 * caller's task (even one submitted through the same bus identity) is
 * `TaskNotFoundError` (-32001) for GetTask, CancelTask, SubscribeToTask,
 * continuing messages and the push config methods, and absent from
 * ListTasks. Without a caller (open mode) the bridge's identity is the
 * caller: it sees the tasks it submitted, and those the ACL grants it.
 */
export class BusRequestHandler implements A2ARequestHandler {
  constructor(
    private readonly bus: Bus,
    /** The card this route serves (an agent's, or the gateway's), as the request resolved it. */
    private readonly card: AgentCard,
    private readonly push?: PushNotifications,
    /** The request's span: submits continue its trace. */
    private readonly op?: Traced,
    /** Who the request comes from, behind the bus identity (see the class comment). */
    private readonly caller?: string,
    /** Aborted when the client of a stream goes away: the relay's consumer stops at once. */
    private readonly signal?: AbortSignal,
    /** A reconnecting stream's `Last-Event-ID`: the cursor to resume after. */
    private readonly resumeAfter?: number,
  ) {}

  /** A task as A2A callers see it: without the bus's own metadata, with its push deliveries (`agentbus.push`) when it has any. */
  #sdk(task: Task): SdkTask {
    const deliveries = this.push?.deliveriesOf(task.id);
    return toSdkTask(deliveries ? { ...task, metadata: { ...task.metadata, [PUSH_METADATA_KEY]: deliveries } } : task);
  }

  async getAgentCard(): Promise<SdkAgentCard> {
    return AgentCardCodec.fromJSON(this.card);
  }

  async getAuthenticatedExtendedAgentCard(): Promise<SdkAgentCard> {
    throw new ExtendedAgentCardNotConfiguredError("this bridge has no extended agent card");
  }

  /** The capability a message goes to: its task's, the named skill, or the route's only skill. */
  #capability(message: Message, metadata: Record<string, unknown> | undefined): string | undefined {
    const named = (message.metadata?.skill ?? metadata?.skill) as string | undefined;
    const skills = this.card.skills.map((s) => s.id);
    if (named) {
      if (!skills.includes(named)) throw new RequestMalformedError(`unknown skill ${named}; this agent offers ${skills.join(", ")}`);
      return named;
    }
    if (message.taskId) return undefined; // the task knows its capability
    if (skills.length === 1) return skills[0];
    throw new RequestMalformedError(`name one of the skills in message.metadata.skill: ${skills.join(", ")}`);
  }

  async #submit(params: SendMessageRequest): Promise<TaskHandle> {
    checkHistoryLength(params.configuration?.historyLength);
    const message = MessageCodec.toJSON(checkMessage(params.message)) as Message;
    const metadata = params.metadata as Record<string, unknown> | undefined;
    let cap = this.#capability(message, metadata);
    const caller = this.caller;
    if (message.taskId) checkTaskId(message.taskId);
    if (!cap && message.taskId) cap = ((await this.bus.task(message.taskId, { caller }).catch((e: unknown) => Promise.reject(a2aError(e, message.taskId)))).metadata.capability);
    let handle: TaskHandle;
    try {
      handle = await this.bus.submit(cap!, message, { taskId: message.taskId || undefined, contextId: message.contextId || undefined, trace: this.op?.trace, caller });
    } catch (err) {
      // A message to a task that has ended: the spec's UnsupportedOperationError.
      if (isAgentBusError(err, "TASK_FINISHED")) throw new UnsupportedOperationError(`${err.message}: a task in a terminal state takes no more messages`);
      throw a2aError(err, message.taskId);
    }
    this.op?.span?.setAttributes({ [SpanAttr.capability]: cap!, [SpanAttr.task]: handle.id });
    const push = params.configuration?.taskPushNotificationConfig;
    if (push) await this.#setPush({ ...PushConfigCodec.toJSON(push) as PushConfig, taskId: handle.id });
    return handle;
  }

  async #setPush(config: PushConfig): Promise<PushConfig> {
    if (!this.push) throw new PushNotificationNotSupportedError("push notifications are off on this bridge");
    await this.#ownTask(config.taskId); // unknown, or another caller's: TaskNotFound
    try {
      return await this.push.set(config);
    } catch (err) {
      throw new RequestMalformedError(`invalid push notification config: ${(err as Error).message}`);
    }
  }

  async sendMessage(params: SendMessageRequest): Promise<SdkMessage | SdkTask> {
    const handle = await this.#submit(params);
    // A blocking send waits for a terminal or interrupted state.
    const task = params.configuration?.returnImmediately ? (handle.submitted ?? (await handle.get())) : await handle.result();
    // An agent that answered with a message alone (no artifact, no status message): the reply is that Message, as the spec allows.
    const reply = bareReply(task);
    if (reply) return MessageCodec.fromJSON(reply);
    return this.#sdk(withHistory(task, params.configuration?.historyLength));
  }

  /**
   * The task as the submit left it (a new task as created, a continued one
   * as resumed), with no read, then the events stored after it: all of a
   * new task's; of a continued task, those after the last one stored
   * before this message (its earlier turns are in the task already).
   */
  async *sendMessageStream(params: SendMessageRequest): AsyncGenerator<StreamResponse> {
    const taskId = params.message?.taskId;
    const before = taskId ? await this.#lastSequence(taskId) : undefined;
    const handle = await this.#submit(params);
    // The task's cursor: the last event it includes (0 for none yet: every event comes after it).
    yield withCursor({ task: TaskCodec.toJSON(this.#sdk(handle.submitted ?? (await handle.get()))) }, before ?? 0);
    for await (const { event, sequence } of handle.events({ fromSequence: before === undefined ? undefined : before + 1, signal: this.signal })) yield withCursor(event, sequence);
  }

  /** The last event stored for a task this caller continues; undefined for none (or a new id the caller chose). */
  async #lastSequence(taskId: string): Promise<number | undefined> {
    try {
      return await (await this.bus.taskHandle(taskId, { caller: this.caller })).lastSequence();
    } catch (err) {
      if (isAgentBusError(err, "TASK_NOT_FOUND")) return undefined; // the submit answers for it
      throw a2aError(err, taskId);
    }
  }

  async getTask(params: GetTaskRequest): Promise<SdkTask> {
    try {
      const task = await this.bus.task(checkTaskId(params.id), { caller: this.caller });
      return this.#sdk(withHistory(task, checkHistoryLength(params.historyLength)));
    } catch (err) {
      throw a2aError(err, params.id);
    }
  }

  async listTasks(params: ListTasksRequest): Promise<ListTasksResponse> {
    const q = ListTasksRequestCodec.toJSON(params) as {
      contextId?: string; status?: string; pageSize?: number; pageToken?: string; historyLength?: number; statusTimestampAfter?: string; includeArtifacts?: boolean;
    };
    // No filter: absent, TASK_STATE_UNSPECIFIED, or what the SDK's client sends for none (UNRECOGNIZED; the routes refuse other names that are no state).
    const status = q.status !== undefined && (TASK_STATES as readonly string[]).includes(q.status) ? q.status : undefined;
    if (q.pageSize !== undefined && (!Number.isInteger(q.pageSize) || q.pageSize < 1 || q.pageSize > 100)) throw new RequestMalformedError(`pageSize ${q.pageSize} is not between 1 and 100`);
    checkHistoryLength(q.historyLength);
    // Only this caller's tasks (the bus lists them from its owner index).
    let page;
    try {
      page = await this.bus.tasks({
        contextId: q.contextId || undefined,
        state: status as TaskState | undefined,
        pageSize: q.pageSize,
        pageToken: q.pageToken || undefined,
        statusTimestampAfter: q.statusTimestampAfter || undefined,
        caller: this.caller,
      });
    } catch (err) {
      if (isAgentBusError(err, "INVALID_INPUT") || !isAgentBusError(err)) throw new RequestMalformedError(`invalid list request: ${(err as Error).message}`);
      throw err;
    }
    // Artifacts only when asked for (the spec's default is without), history as long as asked.
    const listed = (t: Task): Task => withHistory(q.includeArtifacts ? t : { ...t, artifacts: [] }, q.historyLength);
    return ListTasksResponseCodec.fromJSON({
      tasks: page.tasks.map((t) => TaskCodec.toJSON(this.#sdk(listed(t)))),
      nextPageToken: page.nextPageToken ?? "",
      pageSize: page.tasks.length,
      totalSize: page.totalSize,
    });
  }

  async cancelTask(params: CancelTaskRequest): Promise<SdkTask> {
    try {
      return this.#sdk(await (await this.bus.taskHandle(checkTaskId(params.id), { caller: this.caller })).cancel({ trace: this.op?.trace }));
    } catch (err) {
      throw a2aError(err, params.id);
    }
  }

  /**
   * The task as it is now, then its events from there on until it ends: a
   * task waiting for input is followed through its next turns. A task in a
   * terminal state is `UnsupportedOperationError`, as the spec says.
   */
  async *resubscribe(params: SubscribeToTaskRequest): AsyncGenerator<StreamResponse> {
    let events: AsyncGenerator<StoredEvent>;
    let task: Task | undefined;
    let last: number | undefined;
    try {
      const handle = await this.bus.taskHandle(checkTaskId(params.id), { caller: this.caller });
      if (this.resumeAfter !== undefined) {
        // A reconnecting stream: every event after its cursor, and nothing before (the task as it was is the client's already).
        events = handle.events({ fromSequence: this.resumeAfter + 1, untilTerminal: true, signal: this.signal });
      } else {
        // Locate the last stored event before reading the snapshot: nothing can fall in
        // between (an event may show twice, in the snapshot and after it, never be lost).
        last = await handle.lastSequence();
        events = handle.events({ fromSequence: (last ?? 0) + 1, untilTerminal: true, signal: this.signal });
        task = await handle.get();
      }
    } catch (err) {
      throw a2aError(err, params.id);
    }
    if (task) {
      if (isTerminal(task.status.state)) throw new UnsupportedOperationError(`task ${task.id} is ${task.status.state}: a task in a terminal state cannot be subscribed to`);
      yield withCursor({ task: TaskCodec.toJSON(this.#sdk(task)) }, last ?? 0);
    }
    for await (const { event, sequence } of events) yield withCursor(event, sequence);
  }

  async createTaskPushNotificationConfig(params: TaskPushNotificationConfig): Promise<TaskPushNotificationConfig> {
    return PushConfigCodec.fromJSON(await this.#setPush(PushConfigCodec.toJSON(params) as PushConfig));
  }

  /** Push configs belong to their task: another caller's task is not found. */
  async #ownTask(taskId: string): Promise<void> {
    await this.getTask({ id: taskId } as GetTaskRequest);
  }

  async getTaskPushNotificationConfig(params: GetTaskPushNotificationConfigRequest): Promise<TaskPushNotificationConfig> {
    if (!this.push) throw new PushNotificationNotSupportedError("push notifications are off on this bridge");
    await this.#ownTask(params.taskId);
    const config = this.push.get(params.taskId, params.id);
    if (!config) throw new TaskNotFoundError(`no push notification config ${params.id} for task ${params.taskId}`);
    return PushConfigCodec.fromJSON(config);
  }

  async listTaskPushNotificationConfigs(params: ListTaskPushNotificationConfigsRequest): Promise<ListTaskPushNotificationConfigsResponse> {
    if (!this.push) throw new PushNotificationNotSupportedError("push notifications are off on this bridge");
    await this.#ownTask(params.taskId);
    return PushConfigListCodec.fromJSON({ configs: this.push.list(params.taskId), nextPageToken: "" });
  }

  async deleteTaskPushNotificationConfig(params: DeleteTaskPushNotificationConfigRequest): Promise<void> {
    if (!this.push) throw new PushNotificationNotSupportedError("push notifications are off on this bridge");
    await this.#ownTask(params.taskId);
    await this.push.delete(params.taskId, params.id);
  }
}
