/**
 * Reference A2A server for bench/a2a: the @a2a-js/sdk's own express server
 * (DefaultRequestHandler, InMemoryTaskStore, jsonRpcHandler) with an echo
 * executor written against the SDK only. One process, no agentbus code.
 *
 *   node --import tsx bench/a2a/sdk-server.ts
 *
 * JSON-RPC at `<base>/a2a/jsonrpc`. Writes `READY <base-url>` on stdout once
 * listening; exits on stdin close or SIGTERM.
 *
 * The executor answers as the bus echo agent does: the task (SUBMITTED, the
 * user message as history), one artifact named `result` with the input text,
 * then COMPLETED.
 */
import express from "express";
import { AgentCard, TaskState, type Part } from "@a2a-js/sdk";
import { AgentEvent, DefaultRequestHandler, InMemoryTaskStore, type AgentExecutor, type ExecutionEventBus, type RequestContext } from "@a2a-js/sdk/server";
import { UserBuilder, agentCardHandler, jsonRpcHandler } from "@a2a-js/sdk/server/express";
import { exitWithParent } from "../lib.js";
import { profileOnSignal } from "./prof.js";

const textPart = (value: string): Part => ({ content: { $case: "text", value }, metadata: undefined, filename: "", mediaType: "" });
const now = () => new Date().toISOString();

class EchoExecutor implements AgentExecutor {
  async execute(rc: RequestContext, bus: ExecutionEventBus): Promise<void> {
    const { taskId, contextId, userMessage } = rc;
    const text = userMessage.parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("");
    bus.publish(AgentEvent.task(rc.task ?? { id: taskId, contextId, status: { state: TaskState.TASK_STATE_SUBMITTED, message: undefined, timestamp: now() }, artifacts: [], history: [userMessage], metadata: {} }));
    bus.publish(
      AgentEvent.artifactUpdate({
        taskId,
        contextId,
        artifact: { artifactId: `${taskId}-result`, name: "result", description: "", parts: [textPart(text)], metadata: undefined, extensions: [] },
        append: false,
        lastChunk: true,
        metadata: undefined,
      }),
    );
    bus.publish(AgentEvent.statusUpdate({ taskId, contextId, status: { state: TaskState.TASK_STATE_COMPLETED, message: undefined, timestamp: now() }, metadata: undefined }));
    bus.finished();
  }

  async cancelTask(): Promise<void> {}
}

profileOnSignal("sdk");
const app = express();
const server = app.listen(0, "127.0.0.1");
await new Promise((r) => server.once("listening", r));
const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
const card = AgentCard.fromJSON({
  name: "echo",
  description: "echo, served by the @a2a-js/sdk express server",
  version: "1.0.0",
  supportedInterfaces: [{ url: `${base}/a2a/jsonrpc`, protocolBinding: "JSONRPC", protocolVersion: "1.0" }],
  capabilities: { streaming: true, pushNotifications: false },
  defaultInputModes: ["text/plain"],
  defaultOutputModes: ["text/plain"],
  skills: [{ id: "echo", name: "echo", description: "echoes its input", tags: [] }],
});
const requestHandler = new DefaultRequestHandler(card, new InMemoryTaskStore(), new EchoExecutor());
app.use("/.well-known/agent-card.json", agentCardHandler({ agentCardProvider: { getAgentCard: async () => card } } as never));
app.use("/a2a/jsonrpc", jsonRpcHandler({ requestHandler, userBuilder: UserBuilder.noAuthentication }));
process.stdout.write(`READY ${base}\n`);

exitWithParent(() => new Promise<void>((r) => server.close(() => r())));
