import { describe, expect, it } from "vitest";
import { textOf } from "../../core/index.js";
import { useNatsServer } from "../helpers/nats.js";
import { useBuses } from "../helpers/bus.js";

describe("smoke", () => {
  const nats = useNatsServer();
  const bus = useBuses(() => nats.server.url);
  it("round trip", async () => {
    const a = await bus({ insecureAllowAll: true });
    await a.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    const c = await bus();
    const reply = await c.call("echo", "hi");
    expect(textOf(reply)).toBe("echo: hi");
  });
});
