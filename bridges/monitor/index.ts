/**
 * The monitor: what is on the bus, for people and dashboards. REST and SSE
 * under `/v1` (agents, tasks, live task events, send a message) and a small
 * web page at `/monitor/`, as a fastify plugin next to the A2A bridge.
 *
 * @example
 * ```ts
 * import Fastify from "fastify";
 * const app = Fastify({ routerOptions: { ignoreTrailingSlash: true } });
 * await app.register(monitor, { bus, apiKeys: [{ name: "ops", sha256: hashApiKey(process.env.KEY!), bus }] });
 * await app.listen({ port: 8080 }); // http://localhost:8080/monitor/
 * ```
 */
export { monitor, type MonitorOptions, type MonitorError, type MonitorErrorCode } from "./server.js";
export type { TaskView, ViewedTask, TreeNode } from "./tasks.js";
export type { Stats, StatsPoint } from "./stats.js";
export { EventReader, type MonitorEvent, type EventFilter, type Feed } from "../events/index.js";
