import { describe, expect, it } from "vitest";
import { Identity, textOf, type InboxMessage } from "../../core/index.js";
import { eventually, grant, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

describe("offline inbox", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("an agent that was offline receives all 1,000 buffered messages, in order", async () => {
    const agentIdentity = Identity.generate();
    const sender = await open({ tenant: "inbox" });
    await grant(sender, "sender-inbox", { source: sender.id, target: agentIdentity.id, capabilities: ["inbox"] });
    const sends = [];
    for (let i = 0; i < 1000; i++) sends.push(sender.send(agentIdentity.id, `m${i}`));
    const receipts = await Promise.all(sends);
    expect(new Set(receipts.map((r) => r.sequence)).size).toBe(1000);

    // The agent comes online only now.
    const agentBus = await open({ tenant: "inbox", identity: agentIdentity });
    const got: InboxMessage[] = [];
    await agentBus.agent({ name: "mailbox", skills: [{ id: "noop" }] }, { noop: () => "" }, { inbox: (m) => void got.push(m) });
    await eventually(() => got.length === 1000, 20_000);
    expect(got.map((m) => textOf(m.message))).toEqual(Array.from({ length: 1000 }, (_, i) => `m${i}`));
    expect(got.every((m) => m.from === sender.id)).toBe(true);
    const seqs = got.map((m) => m.sequence);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
  });

  it("refuses direct messages from a sender without an inbox grant, and keeps order across a failing handler", async () => {
    const agentBus = await open({ tenant: "inbox2" });
    const stranger = await open({ tenant: "inbox2" });
    const friend = await open({ tenant: "inbox2" });
    await grant(friend, "friend", { source: friend.id, target: agentBus.id, capabilities: ["inbox"] }, agentBus);
    const got: string[] = [];
    let failOnce = true;
    await agentBus.agent({ name: "picky", skills: [{ id: "noop" }] }, { noop: () => "" }, {
      inbox: (m) => {
        const text = textOf(m.message);
        if (text === "b" && failOnce) {
          failOnce = false;
          throw new Error("try again");
        }
        got.push(`${m.from === friend.id ? "friend" : "stranger"}:${text}`);
      },
    });
    await stranger.send(agentBus.id, "spam");
    for (const t of ["a", "b", "c"]) await friend.send(agentBus.id, t);
    await eventually(() => got.length === 3, 10_000);
    expect(got).toEqual(["friend:a", "friend:b", "friend:c"]);
  });
});
