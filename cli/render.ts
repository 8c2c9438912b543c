/**
 * How the CLI shows messages and task events to people (`--json` prints the
 * objects themselves instead).
 */
import type { Part, TaskEvent, TaskState } from "../core/index.js";

/** `TASK_STATE_INPUT_REQUIRED` → `input-required`. */
export const stateName = (state: TaskState): string => state.replace("TASK_STATE_", "").toLowerCase().replaceAll("_", "-");

/** Text parts as they are, other parts (data, url, raw) as JSON; one per line. */
export function partsText(parts: Part[]): string {
  return parts.map((p) => p.text ?? JSON.stringify(p.data ?? p.url ?? p.raw)).join("\n");
}

/** One line about one event, for `tail`. */
export function describeEvent(event: TaskEvent): string {
  if ("statusUpdate" in event) {
    const { state, message } = event.statusUpdate.status;
    return `${stateName(state)}${message ? `: ${partsText(message.parts)}` : ""}`;
  }
  if ("artifactUpdate" in event) {
    const { artifact, append, lastChunk } = event.artifactUpdate;
    const flags = [append && "append", lastChunk && "last"].filter(Boolean).join(", ");
    return `artifact ${artifact.name ?? artifact.artifactId}${flags ? ` (${flags})` : ""}: ${JSON.stringify(partsText(artifact.parts))}`;
  }
  return `message: ${partsText(event.message.parts)}`;
}
