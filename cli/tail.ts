import { Command } from "commander";
import { readAudit, type AuditEntry, type Bus } from "../core/internal.js";
import { EventReader } from "../bridges/events/index.js";
import { describeEvent } from "./render.js";
import { progress, quietOnClosedStdout, untilSignal, withBus, withCommon, type CommonOptions } from "./options.js";

interface TailOptions extends CommonOptions {
  capability?: string;
  task?: string;
  replay?: boolean;
  audit?: boolean;
  kind?: string[];
  verifiedOnly?: boolean;
}

/** `agentbus tail`: the tenant's task events, live. */
export function tail(): Command {
  return withCommon(new Command("tail"))
    .description("follow the tenant's task events live (status updates, artifact chunks, messages) until Ctrl-C")
    .option("--capability <cap>", "only tasks of this capability")
    .option("--task <id>", "only this task: its stored events from the first, then live; ends when the task ends (or waits for input)")
    .option("--replay", "start with every stored event (default: only events from now on)")
    .option("--audit", "follow the audit stream (MESH_<T>_AUDIT) instead: refusals and administrative acts, each verified")
    .option("--kind <kind...>", "with --audit: only these kinds (denied, replayed, expired, …)")
    .option("--verified-only", "with --audit: leave out records whose signature does not verify")
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
not proof.

With --audit: one line per audit record: time, kind, code, claimed sender,
reason; a summary record (a flood of refusals counted, not written one by
one) shows how many it stands for. Every record's signature is checked: one
that does not verify, or whose signer is not the writer it names, is marked
UNVERIFIED with the reason (or left out with --verified-only). With --json:
{"sequence", "subject", "kind", "record", "verified", "signer", "problem"}.`,
    )
    .action(async (o: TailOptions) => {
      quietOnClosedStdout();
      await withBus(o, (bus) => (o.audit ? followAudit(bus, o) : follow(bus, o)));
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

/** One line for an audit record; forged or unverifiable ones are marked. */
function describeAudit(e: AuditEntry): string {
  const r = e.record;
  const at = typeof r.at === "number" ? new Date(r.at).toISOString().slice(11, 23) : "?";
  const what = [e.kind, typeof r.code === "string" ? r.code : "", typeof r.from === "string" ? `from ${r.from}` : "", typeof r.reason === "string" ? r.reason : ""].filter(Boolean).join("  ");
  const summary = r.summary === true ? `  (${String(r.suppressed)} more in ${String(r.intervalMs)} ms, not written one by one)` : "";
  const trust = e.verified ? "" : `  UNVERIFIED: ${e.problem ?? "?"}`;
  return `${at}  ${what}${summary}${trust}`;
}

async function followAudit(bus: Bus, o: TailOptions): Promise<void> {
  for (const k of o.kind ?? []) bus.subjects.audit(k); // INVALID_INPUT (exit 2) for a malformed kind
  const stop = new AbortController();
  void untilSignal().then(() => stop.abort());
  const records = readAudit(bus, { from: o.replay ? 1 : undefined, kinds: o.kind, dropUnverified: o.verifiedOnly, signal: stop.signal });
  const p = progress(o, `following the audit of tenant ${bus.subjects.tenant}`);
  if (!o.json) process.stderr.write(`following audit records of tenant ${bus.subjects.tenant}; Ctrl-C to stop\n`);
  try {
    for await (const e of records) {
      if (o.json) process.stdout.write(`${JSON.stringify(e)}\n`);
      else p.out(`${describeAudit(e)}\n`);
    }
  } finally {
    p.stop();
  }
}
