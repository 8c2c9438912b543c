/**
 * Remote A2A agents joined onto the bus.
 *
 * @example
 * ```ts
 * const remote = await joinRemoteAgent({ bus: await connect(), cardUrl: "https://agent.example.com/.well-known/agent-card.json" });
 * // its skills are now bus capabilities: bus.call / bus.submit reach it
 * ```
 */
export { joinRemoteAgent, type RemoteA2AOptions, type RemoteAgent } from "./remote.js";
