/**
 * agentbus/testing: a handler run against a recording context, no NATS.
 * The same handler is also run on a real bus here, and both must agree.
 */
import { describe, expect, it } from "vitest";
import { textOf, type Handler } from "../../core/index.js";
import { testHandler } from "../../core/testing.js";
import { useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

const writer: Handler = async (ctx) => {
  if (ctx.history.length < 2) return ctx.inputRequired("What about?");
  await ctx.status("drafting");
  await ctx.artifact("Once", { artifactId: "story", lastChunk: false });
  await ctx.artifact(" upon a time", { artifactId: "story", append: true, lastChunk: true });
  return "The end.";
};

describe("testHandler", () => {
  it("records a durable task: events in order, the task folded as the worker folds it, the result", async () => {
    const asking = await testHandler(writer, "a story");
    expect(asking.state).toBe("TASK_STATE_INPUT_REQUIRED");
    expect(textOf(asking.task.status.message!)).toBe("What about?");

    const run = await testHandler(writer, "dragons", { history: [asking.task.history[0]!, asking.task.status.message!] });
    expect(run.state).toBe("TASK_STATE_COMPLETED");
    expect(run.events.map((e) => Object.keys(e)[0])).toEqual(["statusUpdate", "artifactUpdate", "artifactUpdate", "artifactUpdate", "statusUpdate"]);
    const story = run.task.artifacts.find((a) => a.artifactId === "story")!;
    expect(story.parts.map((p) => p.text).join("")).toBe("Once upon a time");
    expect(run.resultText).toBe("The end.");
    expect(run.task.history.map(textOf)).toEqual(["a story", "What about?", "dragons", "drafting"]);
  });

  it("answers ctx.call from the given functions and refuses the others NO_RESPONDERS; records every call", async () => {
    const handler: Handler = async (ctx) => {
      const a = await ctx.call("lookup", { q: ctx.text });
      const b = await ctx.call("missing", "x").catch((e: { code: string }) => e.code);
      return `${textOf(a)} / ${String(b)}`;
    };
    const run = await testHandler(handler, "ada", { calls: { lookup: (m) => `found ${JSON.stringify(m.parts[0]!.data)}` } });
    expect(run.resultText).toBe('found {"q":"ada"} / NO_RESPONDERS');
    expect(run.calls.map((c) => c.capability)).toEqual(["lookup", "missing"]);
  });

  it("a throw fails the task with the error's message; fail, reject and an aborted signal end it as on the bus", async () => {
    const thrown = await testHandler(() => {
      throw new Error("boom");
    }, "x");
    expect(thrown.state).toBe("TASK_STATE_FAILED");
    expect(textOf(thrown.task.status.message!)).toBe("boom");
    expect((thrown.error as Error).message).toBe("boom");
    expect((await testHandler((ctx) => ctx.fail("no"), "x")).state).toBe("TASK_STATE_FAILED");
    expect((await testHandler((ctx) => ctx.reject("won't"), "x")).state).toBe("TASK_STATE_REJECTED");
    const auth = await testHandler((ctx) => ctx.end("TASK_STATE_AUTH_REQUIRED", "sign in first"), "x");
    expect(auth.state).toBe("TASK_STATE_AUTH_REQUIRED");
    expect(textOf(auth.task.status.message!)).toBe("sign in first");
    const ac = new AbortController();
    const canceled = await testHandler(async (ctx) => {
      ac.abort();
      if (ctx.signal.aborted) return;
      return "not reached";
    }, "x", { signal: ac.signal });
    expect(canceled.state).toBe("TASK_STATE_CANCELED");
    const session = await testHandler(async (ctx) => void (await ctx.session()), "x");
    expect(session.state).toBe("TASK_STATE_FAILED");
    expect(textOf(session.task.status.message!)).toMatch(/^UNAVAILABLE: ctx.session\(\) needs a bus/);
  });

  it("as a fast call: artifacts and messages make the reply, and input-required is refused", async () => {
    const run = await testHandler(async (ctx) => {
      await ctx.status("ignored in a call");
      await ctx.artifact("part one, ");
      return `then ${ctx.text}`;
    }, "two", { mode: "call" });
    expect(run.state).toBe("TASK_STATE_COMPLETED");
    expect(run.resultText).toBe("part one, \nthen two");
    expect(run.events).toEqual([]);
    const asking = await testHandler((ctx) => ctx.inputRequired("more?"), "x", { mode: "call" });
    expect(asking.state).toBe("TASK_STATE_FAILED");
    expect((asking.error as { code: string }).code).toBe("INVALID_INPUT");
  });

  describe("beside a real bus", () => {
    const nats = useNatsServer();
    const open = useBuses(() => nats.server.url);

    it("the task it records is the task the bus stores", async () => {
      const agentBus = await open({ tenant: "testing-twin", insecureAllowAll: true });
      const client = await open({ tenant: "testing-twin" });
      await agentBus.agent({ name: "writer", skills: [{ id: "write" }] }, { write: writer });
      const first = await client.submit("write", "a story");
      const asked = await first.result();
      await client.submit("write", { messageId: "m2", role: "ROLE_USER", parts: [{ text: "dragons" }], taskId: first.id });
      const onBus = await (await client.taskHandle(first.id)).result();
      const recorded = await testHandler(writer, "dragons", { history: [asked.history[0]!, asked.status.message!] });
      const shape = (t: typeof onBus) => ({
        state: t.status.state,
        history: t.history.map(textOf),
        artifacts: t.artifacts.map((a) => ({ name: a.name, text: a.parts.map((p) => p.text).join("") })),
      });
      expect(shape(recorded.task)).toEqual(shape(onBus));
    });
  });
});
