import Fastify from "fastify";
import { ClientFactory } from "@a2a-js/sdk/client";
import { Role, TaskState, type Task as SdkTask } from "@a2a-js/sdk";
import { describe, expect, it } from "vitest";
import { AgentBusError, textOf, type Task } from "../../core/index.js";
import { joinRemoteAgent } from "../../adapters/a2a/index.js";
import { a2aBridge, cardVerifier } from "../../bridges/a2a/index.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { startFixture } from "../helpers/process.js";

const artifactText = (t: Task) => t.artifacts.flatMap((a) => a.parts.map((p) => p.text ?? "")).join("");

describe("remote A2A agents joined onto the bus", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("a bus client reaches a separate @a2a-js/sdk server: tasks, multi-turn, cancel, fast calls", async () => {
    const remote = await startFixture("remote-a2a-agent", []);
    try {
      const adapterBus = await open({ tenant: "remote", insecureAllowAll: true });
      const joined = await joinRemoteAgent({ bus: adapterBus, cardUrl: `${remote.hello.url as string}/.well-known/agent-card.json` });
      expect(joined.card.name).toBe("remote-echo");
      const client = await open({ tenant: "remote" });
      await eventually(() => client.discover({ capability: "remote.echo", online: true }).length === 1);

      const done = await (await client.submit("remote.echo", "hi")).result();
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      expect(artifactText(done)).toBe("echo: hi");
      expect(done.history.map(textOf)).toContain("working on it");

      const asking = await client.submit("remote.echo", "ask");
      expect((await asking.result()).status.state).toBe("TASK_STATE_INPUT_REQUIRED");
      await client.submit("remote.echo", { messageId: "t2", role: "ROLE_USER", parts: [{ text: "Ada" }], taskId: asking.id });
      const answered = await asking.result();
      expect(answered.status.state).toBe("TASK_STATE_COMPLETED");
      expect(artifactText(answered)).toBe("hello Ada");

      const running = await client.submit("remote.echo", "wait");
      await eventually(async () => JSON.stringify((await running.get()).history).includes("working on it"));
      expect((await running.cancel()).status.state).toBe("TASK_STATE_CANCELED");

      expect(textOf(await client.call("remote.echo", "quick"))).toBe("echo: quick");
    } finally {
      await remote.kill();
    }
  }, 60_000);

  it.each(["HTTP+JSON", "GRPC"])("a remote whose card offers only %s: joined over that binding, tasks, multi-turn and cancel", async (binding) => {
    const remote = await startFixture("remote-a2a-agent", [binding]);
    try {
      const adapterBus = await open({ tenant: `remote${binding === "GRPC" ? "grpc" : "rest"}`, insecureAllowAll: true });
      const joined = await joinRemoteAgent({ bus: adapterBus, cardUrl: `${remote.hello.url as string}/.well-known/agent-card.json` });
      expect(joined.card.supportedInterfaces.map((i) => i.protocolBinding)).toEqual([binding]);
      const client = await open({ tenant: adapterBus.subjects.tenant });
      await eventually(() => client.discover({ capability: "remote.echo", online: true }).length === 1);
      const done = await (await client.submit("remote.echo", "hi")).result();
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      expect(artifactText(done)).toBe("echo: hi");
      const asking = await client.submit("remote.echo", "ask");
      expect((await asking.result()).status.state).toBe("TASK_STATE_INPUT_REQUIRED");
      await client.submit("remote.echo", { messageId: `t2-${binding}`, role: "ROLE_USER", parts: [{ text: "Ada" }], taskId: asking.id });
      expect(artifactText(await asking.result())).toBe("hello Ada");
      const running = await client.submit("remote.echo", "wait");
      await eventually(async () => JSON.stringify((await running.get()).history).includes("working on it"));
      expect((await running.cancel()).status.state).toBe("TASK_STATE_CANCELED");
    } finally {
      await remote.kill();
    }
  }, 60_000);

  it("end to end: A2A client → bridge → bus → adapter → remote A2A agent", async () => {
    const remote = await startFixture("remote-a2a-agent", []);
    const adapterBus = await open({ tenant: "e2e", insecureAllowAll: true });
    const bridgeBus = await open({ tenant: "e2e" });
    const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    try {
      // The SDK server's card is not signed: refused when signatures are required.
      await expect(joinRemoteAgent({ bus: adapterBus, cardUrl: `${remote.hello.url as string}/.well-known/agent-card.json`, verifyCard: cardVerifier() })).rejects.toMatchObject({ code: "BAD_SIGNATURE" });
      await joinRemoteAgent({ bus: adapterBus, cardUrl: `${remote.hello.url as string}/.well-known/agent-card.json`, name: "proxied" });
      await eventually(() => bridgeBus.discover({ name: "proxied", online: true }).length === 1);
      await app.register(a2aBridge, { bus: bridgeBus, open: true, push: false });
      const url = await app.listen({ port: 0, host: "127.0.0.1" });
      const a2a = await new ClientFactory().createFromUrl(`${url}/a2a/proxied/.well-known/agent-card.json`, "");
      const result = (await a2a.sendMessage({
        tenant: "",
        message: { messageId: "e2e-1", contextId: "", taskId: "", role: Role.ROLE_USER, parts: [{ content: { $case: "text", value: "through" }, metadata: undefined, filename: "", mediaType: "" }], metadata: undefined, extensions: [], referenceTaskIds: [] },
        configuration: undefined,
        metadata: undefined,
      })) as SdkTask;
      expect(result.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
      expect(result.artifacts.flatMap((a) => a.parts.map((p) => (p.content?.$case === "text" ? p.content.value : ""))).join("")).toBe("echo: through");
    } finally {
      await app.close();
      await remote.kill();
    }
  }, 60_000);

  it("a remote agent that speaks A2A 0.3 (its card in the 0.3 shape): joined through the SDK's compatibility transports", async () => {
    // The remote: an agent behind a bridge, whose 0.3-shaped card the adapter is given.
    const agentBus = await open({ tenant: "v03src", insecureAllowAll: true });
    await agentBus.agent({ name: "old", skills: [{ id: "old" }] }, { old: (ctx) => `old: ${ctx.text}` });
    const bridgeBus = await open({ tenant: "v03src" });
    await eventually(() => bridgeBus.discover({ name: "old", online: true }).length === 1);
    const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    try {
      await app.register(a2aBridge, { bus: bridgeBus, open: true, push: false });
      const url = await app.listen({ port: 0, host: "127.0.0.1" });
      const adapterBus = await open({ tenant: "v03dst", insecureAllowAll: true });
      const joined = await joinRemoteAgent({ bus: adapterBus, cardUrl: `${url}/a2a/old/v0.3/.well-known/agent-card.json` });
      // The bridge's v1.0 card is signed by the bridge: joined when its key is trusted, refused when another's is.
      const signedBus = await open({ tenant: "v03dst2", insecureAllowAll: true });
      const v1 = `${url}/a2a/old/.well-known/agent-card.json`;
      await expect(joinRemoteAgent({ bus: signedBus, cardUrl: v1, name: "signed", verifyCard: cardVerifier({ trusted: [signedBus.id] }) })).rejects.toMatchObject({ code: "BAD_SIGNATURE" });
      const signed = await joinRemoteAgent({ bus: signedBus, cardUrl: v1, name: "signed", verifyCard: cardVerifier({ trusted: [bridgeBus.id] }) });
      await signed.stop();
      expect(joined.card.supportedInterfaces[0]).toMatchObject({ url: `${url}/a2a/old`, protocolVersion: "0.3.0" });
      const client = await open({ tenant: "v03dst" });
      await eventually(() => client.discover({ capability: "old", online: true }).length === 1);
      const done = await (await client.submit("old", "still here")).result({ timeout: 20_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      expect(artifactText(done)).toBe("old: still here");
    } finally {
      await app.close();
    }
  }, 60_000);

  it("a remote that is down fails the task with a clear reason after retries; the breaker opens", async () => {
    const remote = await startFixture("remote-a2a-agent", []);
    const adapterBus = await open({ tenant: "down", insecureAllowAll: true });
    const joined = await joinRemoteAgent({
      bus: adapterBus,
      cardUrl: `${remote.hello.url as string}/.well-known/agent-card.json`,
      tasks: { maxDeliver: 3, backoffMs: 20 },
      breaker: { volumeThreshold: 2, resetTimeoutMs: 60_000 },
    });
    await remote.kill();
    const client = await open({ tenant: "down" });
    await eventually(() => client.discover({ capability: "remote.echo", online: true }).length === 1);
    const failed = await (await client.submit("remote.echo", "anyone?")).result({ timeout: 20_000 });
    expect(failed.status.state).toBe("TASK_STATE_FAILED");
    expect(textOf(failed.status.message!)).toMatch(/gave up after 3 attempts: UNAVAILABLE: remote agent remote-echo .* failed/);
    expect(joined.breaker.opened).toBe(true);
    const err = await client.call("remote.echo", "x").catch((e: unknown) => e);
    expect((err as AgentBusError).code).toBe("UNAVAILABLE");
    expect((err as AgentBusError).message).toMatch(/circuit open/);
  }, 60_000);
});
