/** `agentbus work`: queued work per capability and priority, and delayed tasks. */
import { Command } from "commander";
import { print, withBus, withCommon, type CommonOptions } from "./options.js";

/** `agentbus work`. */
export function work(): Command {
  return withCommon(new Command("work"))
    .description("queued work: per capability, work items waiting by priority and held by workers; delayed tasks waiting for their time")
    .action(async (o: CommonOptions) => {
      await withBus(o, async (bus) => {
        const w = await bus.workload();
        const rows = [["capability", "high", "normal", "low", "running"], ...w.capabilities.map((c) => [c.capability, c.pending.high, c.pending.normal, c.pending.low, c.inProgress].map(String))];
        const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
        const table = rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
        print(o, w, `${w.capabilities.length > 0 ? table : "no queued work"}\ndelayed tasks: ${w.delayed}`);
      });
    });
}
