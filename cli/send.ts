import { Command } from "commander";
import { AgentBusError, isInterrupted, isTerminal, TASK_PRIORITIES, type Bus, type TaskEvent, type TaskHandle, type TaskPriority, type TaskState } from "../core/index.js";
import { partsText, stateName } from "./render.js";
import { Exit, parseInput, progress, quietOnClosedStdout, withBus, withCommon, type CommonOptions, type Progress } from "./options.js";

interface SendOptions extends CommonOptions {
  task?: string;
  context?: string;
  /** true: `--wait` (queue even with no agent online, and follow); false: `--no-wait` (queue, print, exit); undefined: follow a task an online agent will take. */
  wait?: boolean;
  delay?: string;
  at?: string;
  priority?: string;
  region?: string;
}

/** `agentbus send <cap> <input>`: a durable task, its events streamed as they arrive. */
export function send(): Command {
  return withCommon(new Command("send"))
    .description("durable task: submit input to a capability and stream its status and artifact chunks as they arrive")
    .argument("<capability>", "capability id")
    .argument("<input>", "plain text (a text part) or JSON (a data part)")
    .option("--task <id>", "answer a task waiting for input (or submit under this id)")
    .option("--context <id>", "A2A context id (default: the task's, else a new one)")
    .option("--wait", "queue the task even when no online agent offers the capability, and wait for one")
    .option("--no-wait", "queue the task, print it and exit without following it (also when no agent offers the capability yet)")
    .option("--delay <ms>", "run the task this many ms from now (nats-server 2.12+)")
    .option("--at <time>", "run the task at this time, e.g. 2026-12-24T18:00:00Z (nats-server 2.12+)")
    .option("--priority <level>", "high, normal or low: workers take the highest waiting first (default normal)")
    .option("--region <name>", "federated bus (AGENTBUS_REGIONS): keep and run the task in this region only, waiting for a provider there")
    .addHelpText(
      "after",
      `
Without --wait or --no-wait, a capability no online agent offers fails at
once (NO_RESPONDERS, exit 1) and nothing is queued: a mistyped capability
does not wait forever. With --wait the task is queued and followed until an
agent takes it and it ends; with --no-wait it is queued for later. (At an
edge site, AGENTBUS_HUB_DOMAIN, tasks no local agent offers go to the hub:
no check.)

Output: the task id, then each status update and artifact chunk as it arrives.
With --json, one JSON object per line: first {"task": …} (the task as submitted),
then {"sequence", "event", "from"} per event, the event in A2A StreamResponse
form ({"statusUpdate"}, {"artifactUpdate"} or {"message"}).

Exit codes: 0 completed (or waiting for input: answer with --task <id>),
1 failed, rejected or canceled, or no online agent offers the capability
(NO_RESPONDERS), 2 usage error, 3 NATS unreachable.

Ctrl-C: the first cancels the task and waits for its final event (exit 1);
a second stops waiting at once (exit 130). SIGTERM stops waiting and leaves
the task running (follow it with: agentbus tail --task <id>).`,
    )
    .action(async (cap: string, input: string, o: SendOptions) => {
      quietOnClosedStdout();
      checkWhen(o);
      await withBus(o, async (bus) => {
        process.exitCode = await sendAndFollow(bus, cap, input, o);
      });
    });
}

async function sendAndFollow(bus: Bus, cap: string, input: string, o: SendOptions): Promise<number> {
  const p = progress(o, `submitting to ${cap}`);
  let handle: TaskHandle;
  let fromSequence: number | undefined;
  try {
    if (o.task) {
      // Answering a waiting task: only what comes after its earlier turns is
      // new. Only the identity that submitted it may (--seed): to any other
      // the task does not exist (TASK_NOT_FOUND).
      fromSequence = await afterLastEvent(bus, o.task);
    }
    // Followed, the task needs an agent: none online is a refusal now, not a wait without end.
    if (o.wait === undefined && !process.env.AGENTBUS_HUB_DOMAIN && !offered(bus, cap, o.region)) {
      throw new AgentBusError(
        "NO_RESPONDERS",
        `no online agent offers ${cap}${o.region ? ` in region ${o.region}` : ""} in tenant ${bus.subjects.tenant}: nothing was queued (agentbus ls --online shows what is offered; --wait queues the task until an agent takes it, --no-wait queues it and exits)`,
      );
    }
    handle = await bus.submit(cap, parseInput(input), {
      taskId: o.task,
      contextId: o.context,
      ...(o.delay !== undefined && { delayMs: Number(o.delay) }),
      ...(o.at !== undefined && { runAt: new Date(o.at) }),
      ...(o.priority !== undefined && { priority: o.priority as TaskPriority }),
      ...(o.region !== undefined && { region: o.region }),
    });
  } catch (err) {
    p.stop();
    throw err;
  }
  const submitted = handle.submitted ?? (await handle.get());
  const runAt = typeof submitted.metadata.runAt === "number" ? new Date(submitted.metadata.runAt).toISOString() : undefined;
  if (o.json) process.stdout.write(`${JSON.stringify({ task: submitted })}\n`);
  else p.out(`task ${handle.id} → ${cap}${typeof submitted.metadata.region === "string" ? ` in ${submitted.metadata.region}${submitted.metadata.pinned ? " (pinned)" : ""}` : ""}${runAt ? ` (runs at ${runAt})` : ""}\n`);
  if (o.wait === false) {
    p.stop();
    if (!o.json && !offered(bus, cap, o.region)) process.stderr.write(`agentbus: no online agent offers ${cap} yet: task ${handle.id} waits in the queue for one\n`);
    return Exit.ok;
  }

  const started = Date.now();
  let label = runAt
    ? `${cap}: waits until ${runAt} (Ctrl-C cancels)`
    : offered(bus, cap, o.region)
      ? `${cap}: queued`
      : `queued: no online agent offers ${cap} yet (Ctrl-C cancels)`;
  p.text(label);
  const ticker = setInterval(() => p.text(`${label} ${Math.round((Date.now() - started) / 1000)}s`), 500);

  let interrupts = 0;
  const onInterrupt = () => {
    if (++interrupts > 1) {
      p.stop();
      process.stderr.write(`\nagentbus: stopped waiting; task ${handle.id} goes on\n`);
      process.exit(130);
    }
    p.text((label = "canceling"));
    if (!o.json) process.stderr.write(`\nagentbus: canceling task ${handle.id} (Ctrl-C again to stop waiting)\n`);
    handle.cancel().catch((err: Error) => process.stderr.write(`agentbus: cancel failed: ${err.message}\n`));
  };
  process.on("SIGINT", onInterrupt);

  const show = humanEvents(p);
  let final: TaskState | undefined;
  try {
    for await (const stored of handle.events({ fromSequence })) {
      if (o.json) process.stdout.write(`${JSON.stringify(stored)}\n`);
      else show(stored.event);
      if ("statusUpdate" in stored.event) {
        const { state } = stored.event.statusUpdate.status;
        if (interrupts === 0) p.text((label = `${cap}: ${stateName(state)}`));
        if (isTerminal(state) || isInterrupted(state)) final = state;
      }
    }
  } finally {
    clearInterval(ticker);
    process.off("SIGINT", onInterrupt);
    show.end();
    p.stop();
  }
  if (final && isInterrupted(final)) {
    if (!o.json) {
      const answer = `agentbus send ${cap} "<answer>" --task ${handle.id}`;
      // The answer's events can be followed by this identity only: a seed file, AGENTBUS_SEED, or nothing (a throwaway).
      const sameIdentity = o.seed ? ` --seed ${o.seed}` : process.env.AGENTBUS_SEED ? "" : undefined;
      process.stderr.write(
        sameIdentity !== undefined
          ? `agentbus: task ${handle.id} waits for input; answer with: ${answer}${sameIdentity}\n`
          : `agentbus: task ${handle.id} waits for input; answer with: ${answer} --no-wait, then follow it with agentbus tail --task ${handle.id} (this run's identity was a throwaway one: give --seed to answer and follow in one step)\n`,
      );
    }
    return Exit.ok;
  }
  return final === "TASK_STATE_COMPLETED" ? Exit.ok : Exit.taskFailed;
}

/** True when an online agent (in `region`, when given) offers `cap`: the registry is a local mirror, loaded when the bus connected. */
function offered(bus: Bus, cap: string, region: string | undefined): boolean {
  return bus.discover({ capability: cap, online: true, region }).length > 0;
}

/**
 * Usage errors of `--priority`, `--delay` and `--at` (exit 2), found before
 * anything is checked or submitted; the library checks the rest (a time too
 * far ahead, a server without delayed tasks).
 */
function checkWhen(o: SendOptions): void {
  if (o.priority !== undefined && !TASK_PRIORITIES.includes(o.priority as TaskPriority)) {
    throw new AgentBusError("INVALID_INPUT", `--priority: priority must be one of ${TASK_PRIORITIES.join(", ")}, not ${JSON.stringify(o.priority)}`);
  }
  if (o.delay !== undefined && (o.delay.trim() === "" || !Number.isFinite(Number(o.delay)) || Number(o.delay) < 0)) {
    throw new AgentBusError("INVALID_INPUT", `--delay: delayMs must be a number of ms, not ${JSON.stringify(o.delay)}`);
  }
  if (o.at !== undefined && Number.isNaN(new Date(o.at).getTime())) {
    throw new AgentBusError("INVALID_INPUT", `--at: ${JSON.stringify(o.at)} is not a time (e.g. 2026-12-24T18:00:00Z)`);
  }
}

/**
 * People's view of a task's events: status updates and messages one per
 * line (`[working] drafting`), artifact chunks written as they come so a
 * streamed answer grows on one line, ended by its last chunk.
 */
function humanEvents(p: Progress): ((event: TaskEvent) => void) & { end(): void } {
  let open: string | undefined; // artifact whose line is not finished
  const endLine = () => {
    if (open !== undefined) p.out("\n");
    open = undefined;
  };
  const show = (event: TaskEvent) => {
    if ("artifactUpdate" in event) {
      const { artifact, append, lastChunk } = event.artifactUpdate;
      if (open !== artifact.artifactId || !append) endLine();
      const text = partsText(artifact.parts);
      if (text) {
        p.out(text);
        open = artifact.artifactId;
      }
      if (lastChunk) endLine();
      return;
    }
    endLine();
    if ("statusUpdate" in event) {
      const { state, message } = event.statusUpdate.status;
      p.out(`[${stateName(state)}]${message ? ` ${partsText(message.parts)}` : ""}\n`);
    } else {
      p.out(`[message] ${partsText(event.message.parts)}\n`);
    }
  };
  return Object.assign(show, { end: endLine });
}

/** The stream sequence after the task's latest stored event (undefined when it has none). */
async function afterLastEvent(bus: Bus, taskId: string): Promise<number | undefined> {
  bus.subjects.taskEvents(taskId); // INVALID_INPUT for a malformed id
  const last = await (await bus.taskHandle(taskId)).lastSequence();
  return last === undefined ? undefined : last + 1;
}
