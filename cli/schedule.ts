/** `agentbus schedule create|ls|pause|resume|rm`: recurring tasks (nats-server 2.14+). */
import { Command } from "commander";
import { AgentBusError, type Schedule, type TaskPriority } from "../core/index.js";
import { parseInput, print, withBus, withCommon, type CommonOptions } from "./options.js";

/** One line per schedule: id, capability, when, state and next run. */
function line(s: Schedule): string {
  const when = s.cron !== undefined ? `cron "${s.cron}"${s.timeZone ? ` ${s.timeZone}` : ""}` : `every ${s.everyMs} ms`;
  const state = s.paused ? "paused" : `next ${new Date(s.nextRunAt!).toISOString()}`;
  return [s.id, s.capability, when, state].join("  ");
}

/** `agentbus schedule …`. */
export function schedule(): Command {
  const cmd = new Command("schedule").description("recurring tasks: each run is an ordinary task of the schedule's creator (nats-server 2.14+)");
  cmd.addCommand(
    withCommon(new Command("create"))
      .description("create a schedule (or replace the one with the same --id)")
      .argument("<capability>", "the capability each run is submitted to")
      .argument("<input>", "the input of every run: text, or JSON")
      .option("--cron <expr>", 'cron: 5 fields ("0 9 * * mon-fri"), 6 with seconds first, or @hourly, @daily, @weekly, @monthly')
      .option("--every <ms>", "or every this many ms (at least 1000)")
      .option("--tz <zone>", "the IANA time zone of --cron (default UTC)")
      .option("--id <id>", "schedule id (default a random one)")
      .option("--ttl <ms>", "each run's deadline, ms after its tick: not started by then, it ends FAILED")
      .option("--priority <level>", "every run's priority: high, normal or low")
      .addHelpText(
        "after",
        `
  agentbus schedule create report '{"period":"day"}' --cron "0 30 7 * * *" --tz Europe/Berlin --id morning-report
  agentbus schedule create ping hi --every 60000`,
      )
      .action(async (capability: string, input: string, o: CommonOptions & { cron?: string; every?: string; tz?: string; id?: string; ttl?: string; priority?: string }) => {
        const number = (v: string | undefined, what: string) => {
          if (v === undefined) return undefined;
          const n = Number(v);
          if (!Number.isSafeInteger(n)) throw new AgentBusError("INVALID_INPUT", `${what} must be a whole number of ms`);
          return n;
        };
        await withBus(o, async (bus) => {
          const s = await bus.schedules.create({ capability, input: parseInput(input), cron: o.cron, everyMs: number(o.every, "--every"), timeZone: o.tz, id: o.id, ttlMs: number(o.ttl, "--ttl"), priority: o.priority as TaskPriority | undefined });
          print(o, s, line(s));
        });
      }),
  );
  cmd.addCommand(
    withCommon(new Command("ls"))
      .description("list this identity's schedules with their next runs")
      .option("--all", "every identity's schedules (an admin's view)")
      .action(async (o: CommonOptions & { all?: boolean }) => {
        await withBus(o, async (bus) => {
          const list = await bus.schedules.list({ creator: o.all ? "*" : undefined });
          print(o, list, list.map((s) => (o.all ? `${line(s)}  by ${s.creator}` : line(s))).join("\n"));
        });
      }),
  );
  for (const [name, description] of [["pause", "stop a schedule's ticks until it is resumed"], ["resume", "start a paused schedule's ticks again"]] as const) {
    cmd.addCommand(
      withCommon(new Command(name))
        .description(description)
        .argument("<id>", "schedule id")
        .action(async (id: string, o: CommonOptions) => {
          await withBus(o, async (bus) => {
            const s = name === "pause" ? await bus.schedules.pause(id) : await bus.schedules.resume(id);
            print(o, s, line(s));
          });
        }),
    );
  }
  cmd.addCommand(
    withCommon(new Command("rm"))
      .description("delete a schedule (runs already started go on)")
      .argument("<id>", "schedule id")
      .action(async (id: string, o: CommonOptions) => {
        await withBus(o, async (bus) => {
          if (!(await bus.schedules.delete(id))) throw new AgentBusError("SCHEDULE_NOT_FOUND", `schedule ${id} not found`);
          print(o, { id, deleted: true }, `${id} deleted`);
        });
      }),
  );
  return cmd;
}
