import { describe, expect, it } from "vitest";
import { createGateway } from "../../bridges/gateway/index.js";
import { hashApiKey } from "../../bridges/a2a/index.js";
import { useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

describe("HTTP gateway", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("with API keys: health and readiness are public, /metrics and the bridges want a key", async () => {
    const bus = await open({ tenant: "gw" });
    const app = await createGateway({ bus, apiKeys: [{ name: "ops", sha256: hashApiKey("ops-key"), bus }] });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    try {
      expect(await (await fetch(`${url}/health`)).json()).toEqual({ status: "ok" });
      expect(await (await fetch(`${url}/ready`)).json()).toEqual({ status: "ready", problems: [] });
      expect((await fetch(`${url}/metrics`)).status).toBe(401);
      const metrics = await fetch(`${url}/metrics`, { headers: { authorization: "Bearer ops-key" } });
      expect(metrics.status).toBe(200);
      expect(await metrics.text()).toContain("# TYPE agentbus_tasks_submitted_total counter");
      expect((await fetch(`${url}/v1/agents`)).status).toBe(401);
      expect((await fetch(`${url}/v1/agents`, { headers: { "x-api-key": "ops-key" } })).status).toBe(200);
      expect((await fetch(`${url}/`, { redirect: "manual" })).headers.get("location")).toBe("/monitor/");
    } finally {
      await app.close();
    }
  });

  it("/ready is 503 with the problem once NATS is gone", async () => {
    const bus = await open({ tenant: "gw2" });
    const app = await createGateway({ bus, open: true });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    try {
      expect((await fetch(`${url}/ready`)).status).toBe(200);
      await bus.close();
      const res = await fetch(`${url}/ready`);
      expect(res.status).toBe(503);
      expect(((await res.json()) as { problems: string[] }).problems).toEqual(["NATS connection closed"]);
    } finally {
      await app.close();
    }
  });
});
