/**
 * A2A agents on the bus: remote A2A agents joined onto it, and
 * `@a2a-js/sdk` executors served by it.
 *
 * @example
 * ```ts
 * const remote = await joinRemoteAgent({ bus: await connect(), cardUrl: "https://agent.example.com/.well-known/agent-card.json" });
 * // its skills are now bus capabilities: bus.call / bus.submit reach it
 * ```
 */
export { joinRemoteAgent, type RemoteA2AOptions, type RemoteAgent } from "./remote.js";
export { serveExecutor, executorHandler, type AgentRunner } from "./executor.js";
