import { describe, expect, it } from "vitest";
import { dataOf, textOf, type Envelope, type StoredEvent, type TaskArtifactUpdateEvent } from "../../core/index.js";
import { draft, startWriter } from "../../agents/writer.js";
import { startOrchestrator } from "../../agents/orchestrator.js";
import { useNatsServer } from "../helpers/nats.js";
import { eventually, useBuses } from "../helpers/bus.js";

describe("example agents", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("writer streams its answer as chunks of one artifact, over time", async () => {
    const tenant = "ex-write";
    await startWriter(await open({ tenant, insecureAllowAll: true }), { delayMs: 150 });
    const client = await open({ tenant });
    const task = await client.submit("write", "the sea");
    const seen: Array<{ at: number; e: StoredEvent }> = [];
    for await (const e of task.events()) seen.push({ at: Date.now(), e });

    const chunks = seen.filter(({ e }) => "artifactUpdate" in e.event).map(({ at, e }) => ({ at, u: (e.event as { artifactUpdate: TaskArtifactUpdateEvent }).artifactUpdate }));
    expect(chunks.map(({ u }) => textOf({ messageId: "", role: "ROLE_AGENT", parts: u.artifact.parts }))).toEqual(draft("the sea"));
    expect(new Set(chunks.map(({ u }) => u.artifact.artifactId)).size).toBe(1);
    expect(chunks.map(({ u }) => u.append)).toEqual([false, true, true, true, true]);
    expect(chunks.map(({ u }) => u.lastChunk)).toEqual([false, false, false, false, true]);
    // Streamed, not delivered at the end: the chunks arrived spread out.
    expect(chunks.at(-1)!.at - chunks[0]!.at).toBeGreaterThanOrEqual(4 * 150 * 0.8);
    const done = await task.result();
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(done.artifacts).toHaveLength(1); // no extra "result" artifact
    expect(done.artifacts[0]!.parts.map((p) => p.text).join("")).toBe(draft("the sea").join(""));
  });

  it("writer stops between chunks when its task is canceled", async () => {
    const tenant = "ex-write-cancel";
    await startWriter(await open({ tenant, insecureAllowAll: true }), { delayMs: 300 });
    const client = await open({ tenant });
    const task = await client.submit("write", "patience");
    const events: StoredEvent[] = [];
    for await (const e of task.events()) {
      events.push(e);
      if ("artifactUpdate" in e.event) {
        expect((await task.cancel()).status.state).toBe("TASK_STATE_CANCELED");
        break;
      }
    }
    const final = await task.get();
    expect(final.status.state).toBe("TASK_STATE_CANCELED");
    // Wait longer than the rest of the answer would take: nothing more comes.
    await new Promise((r) => setTimeout(r, 4 * 300 + 300));
    const after = await task.get();
    expect(after.artifacts[0]!.parts.length).toBeLessThan(draft("patience").length);
    const all: StoredEvent[] = [];
    for await (const e of task.events()) all.push(e);
    expect(all.filter((e) => "artifactUpdate" in e.event).length).toBe(after.artifacts[0]!.parts.length);
    expect(all.at(-1)!.event).toMatchObject({ statusUpdate: { status: { state: "TASK_STATE_CANCELED" } } });
  });

  it("orchestrator asks echo and write in parallel and combines them; the children carry parent and depth", async () => {
    const tenant = "ex-orch";
    const echoed: Envelope[] = [];
    await (await open({ tenant, insecureAllowAll: true })).agent({ name: "echo", skills: [{ id: "echo" }] }, {
      echo: (ctx) => {
        echoed.push(ctx.envelope);
        return ctx.text;
      },
    });
    await startWriter(await open({ tenant, insecureAllowAll: true }), { delayMs: 20 });
    await startOrchestrator(await open({ tenant, insecureAllowAll: true }));
    const client = await open({ tenant });

    const task = await client.submit("orchestrate", "hello | the sea");
    const done = await task.result({ timeout: 20_000 });
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    const result = done.artifacts.find((a) => a.name === "result")!;
    const message = { messageId: "", role: "ROLE_AGENT" as const, parts: result.parts };
    expect(textOf(message)).toBe(`echo: hello\nwrite: ${draft("the sea").join("")}`);
    const data = dataOf<{ echo: string; write: string; children: { write: string } }>(message)!;
    expect(data).toMatchObject({ echo: "hello", write: draft("the sea").join("") });

    // The durable child: a task of its own, pointing at its parent, one level down, same context.
    const child = await client.task(data.children.write);
    expect(child.metadata).toMatchObject({ capability: "write", parent: task.id, depth: 1 });
    expect(child.contextId).toBe(done.contextId);
    expect(child.status.state).toBe("TASK_STATE_COMPLETED");
    // The fast call carried the same on its envelope.
    expect(echoed).toHaveLength(1);
    expect(echoed[0]).toMatchObject({ parent: task.id, depth: 1, context: done.contextId });
    // Only the orchestrator's own identity submitted the child.
    expect(child.metadata.submitter).not.toBe(client.id);
  });

  it("canceling the orchestrator cancels its child task", async () => {
    const tenant = "ex-orch-cancel";
    await (await open({ tenant, insecureAllowAll: true })).agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text });
    // Slow enough (10 s in all) that the child is still writing when the cancel lands, even on a loaded machine.
    await startWriter(await open({ tenant, insecureAllowAll: true }), { delayMs: 2000 });
    await startOrchestrator(await open({ tenant, insecureAllowAll: true }));
    const client = await open({ tenant });

    const task = await client.submit("orchestrate", "stop soon");
    // The orchestrator says which task runs the writer.
    let childId = "";
    for await (const { event } of task.events()) {
      const text = "statusUpdate" in event && event.statusUpdate.status.message ? textOf(event.statusUpdate.status.message) : "";
      childId = /write runs as task (\S+)/.exec(text)?.[1] ?? "";
      if (childId) break;
    }
    expect(childId).not.toBe("");
    expect((await task.cancel()).status.state).toBe("TASK_STATE_CANCELED");
    await eventually(async () => (await client.task(childId)).status.state === "TASK_STATE_CANCELED");
  });
});
