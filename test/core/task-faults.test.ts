import { describe, expect, it } from "vitest";
import { textOf, type StoredEvent } from "../../core/index.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { startFixture } from "../helpers/process.js";

describe("durable tasks survive a killed worker", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("a worker SIGKILLed mid-task: the task is redelivered and completes once on another replica", async () => {
    const client = await open({ tenant: "faults" });
    const doomed = await startFixture("task-worker", [nats.server.url, "faults", "60000", "1500"]);
    const handle = await client.submit("job", "work");
    await eventually(async () => JSON.stringify((await handle.get()).history).includes(`started by ${doomed.hello.pid}`), 10_000);
    await doomed.kill("SIGKILL");

    const survivor = await startFixture("task-worker", [nats.server.url, "faults", "100", "1500"]);
    try {
      const task = await handle.result({ timeout: 20_000 });
      expect(task.status.state).toBe("TASK_STATE_COMPLETED");
      expect(task.artifacts.map((a) => a.parts.map((p) => p.text).join("")).join("")).toBe(`done by ${survivor.hello.pid}`);
      const events: StoredEvent[] = [];
      for await (const e of handle.events()) events.push(e);
      const completed = events.filter((e) => "statusUpdate" in e.event && e.event.statusUpdate.status.state === "TASK_STATE_COMPLETED");
      expect(completed).toHaveLength(1);
      expect(events.map((e) => ("statusUpdate" in e.event ? textOf(e.event.statusUpdate.status.message ?? { messageId: "", role: "ROLE_AGENT", parts: [] }) : "")).join("|")).toContain(`started by ${doomed.hello.pid}`);
    } finally {
      await survivor.kill();
    }
  });
});
