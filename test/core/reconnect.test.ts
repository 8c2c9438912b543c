import { describe, expect, it } from "vitest";
import { textOf } from "../../core/index.js";
import { useNatsServer } from "../helpers/nats.js";
import { eventually, useBuses } from "../helpers/bus.js";

describe("reconnect", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("agents and callers carry on after the server is killed and restarted", async () => {
    const agentBus = await open({ tenant: "re", insecureAllowAll: true });
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `still ${ctx.text}` });
    const caller = await open({ tenant: "re" });
    expect(textOf(await caller.call("echo", "here"))).toBe("still here");

    await nats.server.stop("SIGKILL");
    await nats.server.restart();

    const reply = await eventually(() => caller.call("echo", "here", { timeout: 1000 }).then(textOf), 15_000, 200);
    expect(reply).toBe("still here");
    // The registry survived in JetStream and heartbeats resumed.
    await eventually(() => caller.discover({ name: "echo", online: true }).length === 1, 15_000);
  });
});
