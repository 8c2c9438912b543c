import { randomUUID } from "node:crypto";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterEach, describe, expect, it } from "vitest";
import { isAgentBusError } from "../../core/wire/errors.js";
import { Sessions } from "../../core/store/session.js";
import { Subjects } from "../../core/wire/subjects.js";
import { useNatsServer } from "../helpers/nats.js";

const nats = useNatsServer();

const open: NatsConnection[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((nc) => nc.close()));
});

async function kvm(): Promise<Kvm> {
  const nc = await connect({ servers: nats.server.url });
  open.push(nc);
  return new Kvm(nc);
}

// A tenant per test: each test gets its own bucket, so none sees another's state.
let n = 0;
const tenant = () => `sess${process.pid}-${++n}`;

async function sessions(subjects = new Subjects("mesh", tenant()), history?: number): Promise<Sessions> {
  return Sessions.open(await kvm(), subjects, { replicas: 1, history });
}

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<unknown> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

type Counter = { n?: number; [k: string]: unknown };

describe("sessions", () => {
  it("stores in the tenant's sessions bucket and round-trips put/get", async () => {
    const subjects = new Subjects("mesh", tenant());
    const store = await sessions(subjects);
    expect((await store.kv.status()).bucket).toBe(subjects.bucket("sessions"));

    const s = store.session<{ topic: string; turns: number; nested: { a: number[] } }>(randomUUID());
    expect(await s.get()).toBeUndefined();
    const value = { topic: "weather", turns: 2, nested: { a: [1, 2] } };
    const rev = await s.put(value);
    expect(rev).toBeGreaterThan(0);
    const got = await s.get();
    expect(got?.value).toEqual(value);
    expect(got?.revision).toBe(rev);
    expect(got?.updatedAt).toBeInstanceOf(Date);
    expect(Math.abs(got!.updatedAt.getTime() - Date.now())).toBeLessThan(60_000);
  });

  it("update creates the session when absent, then changes it", async () => {
    const s = (await sessions()).session<Counter>(randomUUID());
    const seen: (Counter | undefined)[] = [];
    const first = await s.update((cur) => {
      seen.push(cur);
      return { n: 1 };
    });
    expect(seen).toEqual([undefined]);
    expect(first.value).toEqual({ n: 1 });
    const second = await s.update(async (cur) => ({ ...cur, n: (cur?.n ?? 0) + 1, more: true }));
    expect(second.value).toEqual({ n: 2, more: true });
    expect(second.revision).toBeGreaterThan(first.revision);
    expect((await s.get())?.value).toEqual({ n: 2, more: true });
    expect((await s.get())?.revision).toBe(second.revision);
  });

  it("loses no write when two agents race 50 updates each on one session", { timeout: 60_000 }, async () => {
    const subjects = new Subjects("mesh", tenant());
    const contextId = randomUUID();
    // Two connections, two Sessions: as two agent processes would.
    const agents = await Promise.all(["a", "b"].map(async (who) => ({ who, store: await sessions(subjects) })));
    await Promise.all(
      agents.flatMap(({ who, store }) => {
        const s = store.session<Counter>(contextId);
        return Array.from({ length: 50 }, (_, i) =>
          s.update((cur) => ({ ...cur, n: (cur?.n ?? 0) + 1, [`by_${who}_${i}`]: true })),
        );
      }),
    );
    const final = await agents[0]!.store.session<Counter>(contextId).get();
    expect(final?.value.n).toBe(100);
    for (const who of ["a", "b"]) {
      for (let i = 0; i < 50; i++) expect(final?.value[`by_${who}_${i}`], `by_${who}_${i}`).toBe(true);
    }
    expect(Object.keys(final!.value)).toHaveLength(101);
  });

  it("history returns past values oldest first and respects limit", async () => {
    const s = (await sessions(undefined, 5)).session<{ v: number }>(randomUUID());
    expect(await s.history()).toEqual([]);
    const revs: number[] = [];
    for (let v = 1; v <= 7; v++) revs.push(await s.put({ v }));

    // The bucket keeps 5 revisions per key: v1 and v2 are gone.
    const all = await s.history();
    expect(all.map((e) => e.value.v)).toEqual([3, 4, 5, 6, 7]);
    expect(all.map((e) => e.revision)).toEqual(revs.slice(2));
    expect(all.every((e) => e.updatedAt instanceof Date)).toBe(true);

    expect((await s.history({ limit: 2 })).map((e) => e.value.v)).toEqual([6, 7]);
    expect((await s.history({ limit: 1 })).map((e) => e.value.v)).toEqual([7]);
    expect((await s.history({ limit: 50 })).map((e) => e.value.v)).toEqual([3, 4, 5, 6, 7]);
    for (const limit of [0, -1, 1.5]) {
      expect(isAgentBusError(await rejection(s.history({ limit })), "MISUSE")).toBe(true);
    }
  });

  it("refuses values that are not JSON objects with MISUSE and writes nothing", async () => {
    const s = (await sessions()).session(randomUUID());
    for (const bad of ["text", 42, null, [1, 2], undefined, true]) {
      const err = await rejection(s.put(bad as never));
      expect(isAgentBusError(err, "MISUSE"), String(bad)).toBe(true);
    }
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(isAgentBusError(await rejection(s.put(cyclic)), "MISUSE")).toBe(true);
    expect(isAgentBusError(await rejection(s.put({ toJSON: () => "x" })), "MISUSE")).toBe(true);

    let calls = 0;
    const err = await rejection(
      s.update(() => {
        calls++;
        return ["not", "an", "object"] as never;
      }),
    );
    expect(isAgentBusError(err, "MISUSE")).toBe(true);
    expect(calls).toBe(1);
    expect(await s.get()).toBeUndefined();
    expect(await s.history()).toEqual([]);
  });

  it("refuses context ids that are not valid keys", async () => {
    const store = await sessions();
    for (const bad of ["", "a.b", "a b", "a*", ">", "a/b"]) {
      expect(isAgentBusError(await rejection(() => store.session(bad)), "INVALID_INPUT"), bad).toBe(true);
    }
    expect(store.session("0b7e2c7a-7d7c-4c55-9a43-6a2f0f5e1d3b").contextId).toBe("0b7e2c7a-7d7c-4c55-9a43-6a2f0f5e1d3b");
  });

  it("reopening on an existing bucket is idempotent and never reconfigures it", async () => {
    const subjects = new Subjects("mesh", tenant());
    const first = await sessions(subjects);
    const id = randomUUID();
    await first.session(id).put({ kept: true });

    const again = await sessions(subjects);
    const third = await sessions(subjects, 16); // the default, spelled out
    expect((await again.session(id).get())?.value).toEqual({ kept: true });
    expect((await third.session(id).get())?.value).toEqual({ kept: true });
    expect((await again.kv.status()).history).toBe(16);

    // Other settings: the @nats-io/kv client binds to an existing bucket
    // without comparing its config, so ensureBucket reports CONFIG_MISMATCH
    // only when the server refuses; either way the bucket keeps its settings.
    const other = await sessions(subjects, 8).catch((err: unknown) => {
      expect(isAgentBusError(err, "CONFIG_MISMATCH")).toBe(true);
      return undefined;
    });
    expect((await first.kv.status()).history).toBe(16);
    if (other) expect((await other.session(id).get())?.value).toEqual({ kept: true });
  });

  it("refuses a history outside what KV supports", async () => {
    for (const history of [0, 65, 2.5]) {
      expect(isAgentBusError(await rejection(sessions(undefined, history)), "MISUSE"), String(history)).toBe(true);
    }
  });

  it("delete forgets value and history; update then starts from nothing", async () => {
    const s = (await sessions()).session<Counter>(randomUUID());
    await s.put({ n: 1 });
    await s.put({ n: 2 });
    await s.delete();
    expect(await s.get()).toBeUndefined();
    expect(await s.history()).toEqual([]);

    const seen: (Counter | undefined)[] = [];
    const e = await s.update((cur) => {
      seen.push(cur);
      return { n: 10 };
    });
    expect(seen).toEqual([undefined]);
    expect((await s.get())?.value).toEqual({ n: 10 });
    expect((await s.get())?.revision).toBe(e.revision);
    await s.delete(); // deleting twice is fine
    expect(await s.get()).toBeUndefined();
  });

  it("retries only revision conflicts: gives up with UNAVAILABLE, rethrows other errors at once", async () => {
    const store = await sessions();
    const s = store.session<Counter>(randomUUID());
    await s.put({ n: 0 });

    // A writer that always gets in between the read and the write.
    let calls = 0;
    const err = await rejection(
      s.update(
        async (cur) => {
          calls++;
          await store.session<Counter>(s.contextId).put({ n: 1000 + calls });
          return { n: (cur?.n ?? 0) + 1 };
        },
        { maxAttempts: 3 },
      ),
    );
    expect(isAgentBusError(err, "UNAVAILABLE")).toBe(true);
    expect(calls).toBe(3);
    expect((await s.get())?.value).toEqual({ n: 1003 });

    const boom = new Error("boom");
    calls = 0;
    const thrown = await rejection(
      s.update(() => {
        calls++;
        throw boom;
      }),
    );
    expect(thrown).toBe(boom);
    expect(calls).toBe(1);

    // A write that fails for another reason (over the server's max_payload).
    calls = 0;
    const tooBig = await rejection(
      s.update(() => {
        calls++;
        return { blob: "x".repeat(2 * 1024 * 1024) };
      }),
    );
    expect(isAgentBusError(tooBig)).toBe(false);
    expect(calls).toBe(1);

    for (const maxAttempts of [0, -1, 1.5]) {
      expect(isAgentBusError(await rejection(s.update((c) => c ?? {}, { maxAttempts })), "MISUSE")).toBe(true);
    }
  });
});
