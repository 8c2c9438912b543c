/**
 * The `bus_task` row of the MCP benches: what the bridge's `tools/call`
 * does for a capability without a schema (`callTool` in
 * bridges/mcp/tools.ts), without MCP: `bus.submit` → `result()` on its own
 * connection, each answer checked.
 */
import { connect, createLogger, textOf, type Bus } from "../../core/index.js";
import { progress } from "../lib.js";

/** A connection that can reach the `echo` agent, and one checked call through it. */
export async function busTaskCall(servers: string, tenant: string, text: string, timeoutMs: number): Promise<{ bus: Bus; call: () => Promise<void> }> {
  const bus = await connect({ servers, tenant, name: "bench-mcp-direct", logger: createLogger({ level: "error" }) });
  const deadline = Date.now() + 15_000;
  while (bus.discover({ capability: "echo", online: true }).length === 0) {
    if (Date.now() > deadline) throw new Error("bus_task: echo agent never appeared in discovery");
    await new Promise((r) => setTimeout(r, 20));
  }
  const call = async (): Promise<void> => {
    const task = await (await bus.submit("echo", text)).result({ timeout: timeoutMs });
    const echoed = task.artifacts.flatMap((a) => a.parts).map((p) => p.text ?? "").join("");
    if (task.status.state !== "TASK_STATE_COMPLETED" || echoed !== text) throw new Error(`bus_task: ${task.status.state} ${echoed} ${task.status.message ? textOf(task.status.message) : ""}`);
  };
  await call();
  progress(`bus_task: one task echoed "${text}"`);
  return { bus, call };
}
