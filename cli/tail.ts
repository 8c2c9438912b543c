import { Command } from "commander";
import type { Bus } from "../core/index.js";
import { EventReader } from "../bridges/monitor/events.js";
import { describeEvent } from "./render.js";
import { progress, quietOnClosedStdout, untilSignal, withBus, withCommon, type CommonOptions } from "./options.js";

interface TailOptions extends CommonOptions {
  capability?: string;
  task?: string;
  replay?: boolean;
}

/** `agentbus tail`: the tenant's task events, live. */
export function tail(): Command {
  return withCommon(new Command("tail"))
    .description("follow the tenant's task events live (status updates, artifact chunks, messages) until Ctrl-C")
    .option("--capability <cap>", "only tasks of this capability")
    .option("--task <id>", "only this task: its stored events from the first, then live; ends when the task ends (or waits for input)")
    .option("--replay", "start with every stored event (default: only events from now on)")
    .addHelpText(
      "after",
      `
One line per event: time, task id, capability, what happened. With --json,
one object per line, as the monitor's /v1/events sends them: {"sequence",
"taskId", "capability", "time", "from", "verified", "event"} (event in A2A
StreamResponse form).

Verification: task events are MACed for the identity that submitted the task.
tail verifies what it can (events of tasks submitted with its own --seed, and
signed ones); the others are shown as their publisher states them, without
verifying other identities' MACs ("verified": false): an operator's view,
not proof.`,
    )
    .action(async (o: TailOptions) => {
      quietOnClosedStdout();
      await withBus(o, (bus) => follow(bus, o));
    });
}

async function follow(bus: Bus, o: TailOptions): Promise<void> {
  // The monitor's reader: the same events, verification and JSON shape as /v1/events.
  const reader = new EventReader([]);
  if (o.task) bus.subjects.taskEvents(o.task); // INVALID_INPUT (exit 2) for a malformed id
  const feed = o.task
    ? await reader.follow(bus, o.task, (await bus.task(o.task)).metadata.capability)
    : await reader.feed(bus, { capabilities: o.capability ? [o.capability] : undefined, from: o.replay ? 1 : undefined });
  void untilSignal().then(() => feed.stop());

  const what = o.task ? `task ${o.task}` : `tenant ${bus.subjects.tenant}${o.capability ? `, capability ${o.capability}` : ""}`;
  const p = progress(o, `following ${what}`);
  if (!o.json) process.stderr.write(`following task events of ${what}; Ctrl-C to stop\n`);
  try {
    for await (const e of feed.events) {
      if (o.json) process.stdout.write(`${JSON.stringify(e)}\n`);
      else p.out(`${e.time.slice(11, 23)}  ${e.taskId}  ${e.capability ?? "?"}  ${describeEvent(e.event)}\n`);
    }
  } finally {
    feed.stop();
    p.stop();
  }
}
