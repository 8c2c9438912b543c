import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import {
  Message as MessageCodec,
  SendMessageRequest,
  Task as TaskCodec,
  TaskArtifactUpdateEvent as ArtifactEventCodec,
  TaskStatusUpdateEvent as StatusEventCodec,
} from "@a2a-js/sdk";
import { RequestContext, ServerCallContext, type AgentExecutionEvent, type AgentExecutor, type ExecutionEventBus } from "@a2a-js/sdk/server";
import type { Agent, AgentOptions, AgentSpec } from "../../core/agent/agent.js";
import type { AgentContext, Handler } from "../../core/agent/context.js";
import type { Message } from "../../core/wire/protocol.js";
import type { TaskArtifactUpdateEvent, TaskStatusUpdateEvent } from "../../core/wire/task.js";

/**
 * An `ExecutionEventBus` whose events become the bus task's events. The
 * SDK's `publish()` is synchronous; events are applied in order on a
 * promise chain that the handler awaits before it returns.
 */
class TaskEventBus extends EventEmitter implements ExecutionEventBus {
  #chain: Promise<void> = Promise.resolve();
  #first = true;

  constructor(private readonly ctx: AgentContext) {
    super();
  }

  publish(event: AgentExecutionEvent): void {
    const first = this.#first;
    this.#first = false;
    this.#chain = this.#chain.then(() => this.#apply(event, first));
    this.emit("event", event);
  }

  finished(): void {
    this.emit("finished");
  }

  /** Resolves when every published event is stored; rejects with the first failure. */
  drained(): Promise<void> {
    return this.#chain;
  }

  async #apply(event: AgentExecutionEvent, first: boolean): Promise<void> {
    switch (event.kind) {
      case "task":
        return; // the bus created the task already; its first status is ours
      case "statusUpdate": {
        const { status } = StatusEventCodec.toJSON(event.data) as TaskStatusUpdateEvent;
        if (status.state === "TASK_STATE_WORKING") return status.message ? this.ctx.status(status.message) : undefined;
        // A cancel is finished by the worker once the handler returns.
        if (status.state === "TASK_STATE_CANCELED") return;
        return this.ctx.end(status.state, status.message);
      }
      case "artifactUpdate": {
        const { artifact, append, lastChunk } = ArtifactEventCodec.toJSON(event.data) as TaskArtifactUpdateEvent;
        return this.ctx.artifact(artifact.parts, {
          artifactId: artifact.artifactId,
          name: artifact.name,
          description: artifact.description,
          metadata: artifact.metadata,
          append,
          lastChunk,
        });
      }
      case "message": {
        const message = MessageCodec.toJSON(event.data) as Message;
        await this.ctx.message(message);
        // A message as the first event is the whole answer (no task follows).
        if (first) await this.ctx.end("TASK_STATE_COMPLETED");
      }
    }
  }
}

/** What {@link serveExecutor} needs of a bus: running an agent. */
export interface AgentRunner {
  agent(spec: AgentSpec, handlers: Record<string, Handler>, options?: AgentOptions): Promise<Agent>;
}

/**
 * Runs an unchanged `@a2a-js/sdk` `AgentExecutor` as a bus agent: every
 * skill of `spec` is served by it, as fast calls and durable tasks.
 *
 * @example
 * ```ts
 * const agent = await serveExecutor(await connect(), new MyExecutor(), { name: "sdk-agent", skills: [{ id: "chat" }] });
 * ```
 */
export function serveExecutor(bus: AgentRunner, executor: AgentExecutor, spec: AgentSpec, options?: AgentOptions): Promise<Agent> {
  const handler = executorHandler(executor);
  return bus.agent(spec, Object.fromEntries(spec.skills.map((s) => [s.id, handler])), options);
}

/**
 * A handler that runs an unchanged `@a2a-js/sdk` `AgentExecutor`: it gets the
 * SDK's `RequestContext` (with the task on follow-up turns) and an
 * `ExecutionEventBus` backed by the task's event subject; a bus cancel calls
 * its `cancelTask`.
 */
export function executorHandler(executor: AgentExecutor): Handler {
  return async (ctx) => {
    const taskId = ctx.taskId ?? randomUUID();
    const contextId = ctx.contextId ?? randomUUID();
    const request = SendMessageRequest.fromJSON({ message: { ...ctx.userMessage, taskId, contextId } });
    // The SDK hands the executor a task only on follow-up turns.
    const task = ctx.task && ctx.history.length > 1 ? TaskCodec.fromJSON(ctx.task) : undefined;
    const requestContext = new RequestContext(request, taskId, contextId, new ServerCallContext(), task);
    const bus = new TaskEventBus(ctx);
    const onCancel = () => void executor.cancelTask(taskId, bus).catch((err: unknown) => ctx.log.warn({ err: String(err) }, "cancelTask failed"));
    ctx.signal.addEventListener("abort", onCancel, { once: true });
    try {
      await executor.execute(requestContext, bus);
      await bus.drained();
    } finally {
      ctx.signal.removeEventListener("abort", onCancel);
    }
  };
}
