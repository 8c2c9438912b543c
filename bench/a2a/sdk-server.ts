/**
 * Reference A2A server for bench/a2a: the @a2a-js/sdk's own express server
 * (DefaultRequestHandler, InMemoryTaskStore, jsonRpcHandler) with an echo
 * executor written against the SDK only. One process, no agentbus code.
 *
 *   node --import tsx bench/a2a/sdk-server.ts [--bindings]
 *
 * JSON-RPC at `<base>/a2a/jsonrpc`. With `--bindings` (bench/a2a/bindings.ts)
 * also HTTP+JSON (`restHandler`) at `<base>/a2a/rest` and gRPC (`grpcService`
 * + `A2AService` on a `@grpc/grpc-js` server, free loopback port), one
 * request handler behind all three, and the card at
 * `<base>/.well-known/agent-card.json` lists the three interfaces (so an SDK
 * client picks its binding from it); without, the card lists JSON-RPC only,
 * as before. Writes `READY <base-url>` on stdout once listening (with
 * `--bindings`, a `GRPC <host:port>` line first); exits on stdin close or
 * SIGTERM.
 *
 * The executor answers as the bus echo agent does: the task (SUBMITTED, the
 * user message as history), one artifact named `result` with the input text,
 * then COMPLETED.
 */
import express from "express";
import { AgentCard, TaskState, type Part } from "@a2a-js/sdk";
import { AgentEvent, DefaultRequestHandler, InMemoryTaskStore, type AgentExecutor, type ExecutionEventBus, type RequestContext } from "@a2a-js/sdk/server";
import { UserBuilder, agentCardHandler, jsonRpcHandler, restHandler } from "@a2a-js/sdk/server/express";
import { A2AService, UserBuilder as GrpcUserBuilder, grpcService } from "@a2a-js/sdk/server/grpc";
import * as grpc from "@grpc/grpc-js";
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

const allBindings = process.argv.slice(2).includes("--bindings");

profileOnSignal("sdk");
const app = express();
const server = app.listen(0, "127.0.0.1");
await new Promise((r) => server.once("listening", r));
const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
const interfaces = [{ url: `${base}/a2a/jsonrpc`, protocolBinding: "JSONRPC", protocolVersion: "1.0" }];
if (allBindings) interfaces.push({ url: `${base}/a2a/rest`, protocolBinding: "HTTP+JSON", protocolVersion: "1.0" });
const card = AgentCard.fromJSON({
  name: "echo",
  description: "echo, served by the @a2a-js/sdk express server",
  version: "1.0.0",
  supportedInterfaces: interfaces,
  capabilities: { streaming: true, pushNotifications: false },
  defaultInputModes: ["text/plain"],
  defaultOutputModes: ["text/plain"],
  skills: [{ id: "echo", name: "echo", description: "echoes its input", tags: [] }],
});
const requestHandler = new DefaultRequestHandler(card, new InMemoryTaskStore(), new EchoExecutor());
app.use("/.well-known/agent-card.json", agentCardHandler({ agentCardProvider: { getAgentCard: async () => card } } as never));
app.use("/a2a/jsonrpc", jsonRpcHandler({ requestHandler, userBuilder: UserBuilder.noAuthentication }));
let grpcServer: grpc.Server | undefined;
if (allBindings) {
  app.use("/a2a/rest", restHandler({ requestHandler, userBuilder: UserBuilder.noAuthentication }));
  // The service before the bind; the card learns the bound port after (the handler serves this card object).
  grpcServer = new grpc.Server();
  grpcServer.addService(A2AService, grpcService({ requestHandler, userBuilder: GrpcUserBuilder.noAuthentication }));
  const port = await new Promise<number>((resolve, reject) => grpcServer!.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  card.supportedInterfaces.push({ url: `127.0.0.1:${port}`, protocolBinding: "GRPC", protocolVersion: "1.0", tenant: "" });
  process.stdout.write(`GRPC 127.0.0.1:${port}\n`);
}
process.stdout.write(`READY ${base}\n`);

exitWithParent(async () => {
  grpcServer?.forceShutdown();
  await new Promise<void>((r) => server.close(() => r()));
});
