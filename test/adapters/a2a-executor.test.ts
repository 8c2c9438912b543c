import { describe, expect, it } from "vitest";
import { serveExecutor } from "../../adapters/a2a/index.js";
import { textOf, type Task } from "../../core/index.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { SdkEchoExecutor } from "../fixtures/sdk-executor.js";

const artifactText = (t: Task) => t.artifacts.flatMap((a) => a.parts.map((p) => p.text)).join("");

describe("serveExecutor(bus, executor): an unchanged @a2a-js/sdk AgentExecutor", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("runs tasks, multi-turn and cancel through the SDK's ExecutionEventBus", async () => {
    const agentBus = await open({ tenant: "sdk", insecureAllowAll: true });
    const client = await open({ tenant: "sdk" });
    const executor = new SdkEchoExecutor();
    await serveExecutor(agentBus, executor, { name: "sdk-echo", skills: [{ id: "sdk.echo", description: "echo through the SDK" }] });

    const done = await (await client.submit("sdk.echo", "hi")).result();
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(done)).toBe("echo: hi");
    expect(done.artifacts[0]!.artifactId).toBe("echo-1");
    expect(done.history.map(textOf)).toContain("working on it");

    const asking = await client.submit("sdk.echo", "ask");
    const waiting = await asking.result();
    expect(waiting.status.state).toBe("TASK_STATE_INPUT_REQUIRED");
    expect(textOf(waiting.status.message!)).toBe("your name?");
    await client.submit("sdk.echo", { messageId: "turn-2", role: "ROLE_USER", parts: [{ text: "Ada" }], taskId: asking.id });
    const answered = await asking.result();
    expect(answered.status.state).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(answered)).toBe("hello Ada");

    const running = await client.submit("sdk.echo", "wait");
    await eventually(async () => (await running.get()).status.state === "TASK_STATE_WORKING");
    expect((await running.cancel()).status.state).toBe("TASK_STATE_CANCELED");
    expect(executor.cancelled.has(running.id)).toBe(true);

    // The same executor answers fast calls too.
    expect(textOf(await client.call("sdk.echo", "quick"))).toBe("echo: quick");
  });

  it("bus.serve (deprecated) still runs an executor, through the same adapter", async () => {
    const agentBus = await open({ tenant: "sdk-old", insecureAllowAll: true });
    const client = await open({ tenant: "sdk-old" });
    await agentBus.serve(new SdkEchoExecutor(), { name: "sdk-echo", skills: [{ id: "sdk.echo" }] });
    expect(textOf(await client.call("sdk.echo", "still"))).toBe("echo: still");
  });
});
