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
import type { PushConfig, PushNotifications } from "./push.js";
import { ExtendedAgentCardNotConfiguredError, PushNotificationNotSupportedError, RequestMalformedError, TaskNotCancelableError, TaskNotFoundError } from "@a2a-js/sdk/errors";
import type { A2ARequestHandler } from "@a2a-js/sdk/server";
import { isAgentBusError, isFinal, SpanAttr, type AgentCard, type Bus, type Message, type StoredEvent, type Task, type TaskHandle, type TaskState, type Traced } from "../../core/internal.js";

/** Bus internals that A2A callers need not see. */
function toSdkTask(task: Task): SdkTask {
  const { submitter: _s, agent: _a, caller: _c, ...metadata } = task.metadata;
  return TaskCodec.fromJSON({ ...task, metadata });
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
  ) {}

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
    if (!params.message) throw new RequestMalformedError("params.message is required");
    const message = MessageCodec.toJSON(params.message) as Message;
    const metadata = params.metadata as Record<string, unknown> | undefined;
    let cap = this.#capability(message, metadata);
    const caller = this.caller;
    if (!cap && message.taskId) cap = ((await this.bus.task(message.taskId, { caller }).catch((e: unknown) => Promise.reject(a2aError(e, message.taskId)))).metadata.capability);
    let handle: TaskHandle;
    try {
      handle = await this.bus.submit(cap!, message, { taskId: message.taskId || undefined, contextId: message.contextId || undefined, trace: this.op?.trace, caller });
    } catch (err) {
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
    return toSdkTask(task);
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
    yield StreamResponseCodec.fromJSON({ task: TaskCodec.toJSON(toSdkTask(handle.submitted ?? (await handle.get()))) });
    for await (const { event } of handle.events({ fromSequence: before === undefined ? undefined : before + 1 })) yield StreamResponseCodec.fromJSON(event);
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
      const task = await this.bus.task(params.id, { caller: this.caller });
      const n = params.historyLength;
      return toSdkTask(n === undefined ? task : { ...task, history: n === 0 ? [] : task.history.slice(-n) });
    } catch (err) {
      throw a2aError(err, params.id);
    }
  }

  async listTasks(params: ListTasksRequest): Promise<ListTasksResponse> {
    const q = ListTasksRequestCodec.toJSON(params) as { contextId?: string; status?: TaskState; pageSize?: number; pageToken?: string };
    // Only this caller's tasks (the bus lists them from its owner index).
    const page = await this.bus.tasks({ contextId: q.contextId || undefined, state: q.status, pageSize: q.pageSize, pageToken: q.pageToken || undefined, caller: this.caller });
    return ListTasksResponseCodec.fromJSON({
      tasks: page.tasks.map((t) => TaskCodec.toJSON(toSdkTask(t))),
      nextPageToken: page.nextPageToken ?? "",
      pageSize: page.tasks.length,
      totalSize: page.totalSize,
    });
  }

  async cancelTask(params: CancelTaskRequest): Promise<SdkTask> {
    try {
      return toSdkTask(await (await this.bus.taskHandle(params.id, { caller: this.caller })).cancel({ trace: this.op?.trace }));
    } catch (err) {
      throw a2aError(err, params.id);
    }
  }

  /** The task as it is now, then its events from there on. */
  async *resubscribe(params: SubscribeToTaskRequest): AsyncGenerator<StreamResponse> {
    const handle = await this.bus.taskHandle(params.id, { caller: this.caller });
    let events: AsyncGenerator<StoredEvent>;
    let task: Task;
    try {
      // Locate the last stored event before reading the snapshot: nothing can fall in
      // between (an event may show twice, in the snapshot and after it, never be lost).
      events = handle.events({ fromSequence: ((await handle.lastSequence()) ?? 0) + 1 });
      task = await handle.get();
    } catch (err) {
      throw a2aError(err, params.id);
    }
    yield StreamResponseCodec.fromJSON({ task: TaskCodec.toJSON(toSdkTask(task)) });
    if (isFinal(task.status.state)) return;
    for await (const { event } of events) yield StreamResponseCodec.fromJSON(event);
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
