import { describe, expect, it } from "vitest";
import { AgentBusError, Identity, connect, textOf } from "../../core/index.js";
import { useNatsServer } from "../helpers/nats.js";
import { quietLogger } from "../helpers/bus.js";

// One identity both authenticates the connection (nkey challenge) and signs envelopes.
const agentId = Identity.generate();

describe("connection credentials", () => {
  const nats = useNatsServer({
    auth: { user: "ops", pass: "ops-secret" },
    config: {
      authorization: {
        users: [{ nkey: agentId.id }, { user: "ops", password: "ops-secret" }, { user: "app", password: "app-secret" }],
      },
    },
  });

  it("authenticates with the bus identity's nkey and with user/password", async () => {
    const agentBus = await connect({ servers: nats.server.url, identity: agentId, auth: { nkey: true }, insecureAllowAll: true, logger: quietLogger });
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text });
    const caller = await connect({ servers: nats.server.url, auth: { user: "app", pass: "app-secret" }, logger: quietLogger });
    expect(textOf(await caller.call("echo", "over auth"))).toBe("over auth");
    await caller.close();
    await agentBus.close();
  });

  it("refuses a connection with wrong credentials as DENIED, naming the server", async () => {
    const err = await connect({ servers: nats.server.url, auth: { user: "app", pass: "wrong" }, logger: quietLogger }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentBusError);
    expect((err as AgentBusError).code).toBe("DENIED");
    expect((err as AgentBusError).message).toContain(nats.server.url);
    const stranger = await connect({ servers: nats.server.url, identity: Identity.generate(), auth: { nkey: true }, logger: quietLogger }).catch((e: unknown) => e);
    expect((stranger as AgentBusError).code).toBe("DENIED");
  });
});
