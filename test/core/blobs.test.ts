import { createHash, randomBytes } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { describe, expect, it } from "vitest";
import { AgentBusError, type Part, type Task } from "../../core/index.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

let tenants = 0;
const MB = 1024 * 1024;
const sha = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");
const BLOB = "application/vnd.agentbus.blob+json";

async function rejectsWith(p: Promise<unknown>, code: string): Promise<AgentBusError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(AgentBusError);
  expect((err as AgentBusError).code).toBe(code);
  return err as AgentBusError;
}

describe("large task content through the object store (claim check)", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  const pair = async (o: { maxTaskBytes?: number } = {}) => {
    const tenant = `blobs${++tenants}`;
    const agentBus = await open({ tenant, insecureAllowAll: true, ...o });
    const client = await open({ tenant, ...o });
    return { tenant, agentBus, client };
  };

  it("a 20 MB input and a 50 MB artifact go submit → agent → result; the stored task and events carry references only", async () => {
    const { agentBus, client } = await pair();
    const input = randomBytes(20 * MB);
    const output = randomBytes(50 * MB);
    let seen: { digest: string; history: string; size: number } | undefined;
    await agentBus.agent({ name: "big", skills: [{ id: "big" }] }, {
      big: async (ctx) => {
        const raw = ctx.userMessage.parts[0]!.raw!;
        const bytes = Buffer.from(raw, "base64");
        seen = { digest: sha(bytes), history: sha(Buffer.from(ctx.history[0]!.parts[0]!.raw!, "base64")), size: bytes.length };
        await ctx.artifact([{ raw: output.toString("base64"), mediaType: "application/octet-stream", filename: "out.bin" }], { name: "out" });
        return "done";
      },
    });
    const handle = await client.submit("big", [{ raw: input.toString("base64"), mediaType: "application/octet-stream", filename: "in.bin" }]);
    const task = await handle.result({ timeout: 60_000 });
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(seen).toEqual({ digest: sha(input), history: sha(input), size: input.length });
    const out = task.artifacts.find((a) => a.name === "out")!.parts[0]!;
    expect(out.filename).toBe("out.bin");
    expect(out.mediaType).toBe("application/octet-stream");
    expect(sha(Buffer.from(out.raw!, "base64"))).toBe(sha(output));

    // Read back by id (another path than the submit's watch): the same bytes.
    const again = await client.task(handle.id);
    expect(sha(Buffer.from(again.history[0]!.parts[0]!.raw!, "base64"))).toBe(sha(input));
    expect(sha(Buffer.from(again.artifacts.find((a) => a.name === "out")!.parts[0]!.raw!, "base64"))).toBe(sha(output));
    // Events, too.
    for await (const e of handle.events()) {
      if ("artifactUpdate" in e.event && e.event.artifactUpdate.artifact.name === "out") {
        expect(sha(Buffer.from(e.event.artifactUpdate.artifact.parts[0]!.raw!, "base64"))).toBe(sha(output));
      }
    }

    // What is stored: references (name under the submitter and task, size, digest), and ciphertext in the bucket.
    const kv = await client.nc.request(`$JS.API.DIRECT.GET.KV_${client.subjects.bucket("tasks")}`, JSON.stringify({ last_by_subj: `$KV.${client.subjects.bucket("tasks")}.${client.id}.${handle.id}` }));
    expect(kv.data.length).toBeLessThan(64 * 1024);
    const stored = JSON.parse(Buffer.from(kv.data).toString()) as Task;
    const refs = [stored.history[0]!.parts[0]!, stored.artifacts.find((a) => a.name === "out")!.parts[0]!];
    for (const ref of refs) {
      expect(ref.mediaType).toBe(BLOB);
      const r = ref.data as { name: string; size: number; digest: string; bucket: string };
      expect(r.bucket).toBe(client.subjects.bucket("blobs"));
      expect(r.name.startsWith(`${client.id}.${handle.id}.`)).toBe(true);
      expect(r.digest).toMatch(/^SHA-256=/);
    }
    expect((refs[0]!.data as { size: number }).size).toBe(input.length);
    expect((refs[1]!.data as { size: number }).size).toBe(output.length);
    const os = await new Objm(client.nc).open(client.subjects.bucket("blobs"));
    const blob = await os.getBlob((refs[0]!.data as { name: string }).name);
    expect(blob!.length).toBe(input.length + 16);
    expect(sha(blob!)).not.toBe(sha(input));
    expect(Buffer.from(blob!).indexOf(input.subarray(0, 64))).toBe(-1);
    const status = await os.status();
    expect(status.ttl).toBe(7 * 24 * 3600_000 * 1_000_000);
  }, 120_000);

  it("fast calls carry large inputs and replies as claim checks both ways; past maxTaskBytes, PAYLOAD_TOO_LARGE", async () => {
    const { agentBus, client, tenant } = await pair({ maxTaskBytes: 8 * MB });
    const input = randomBytes(3 * MB);
    const output = randomBytes(4 * MB);
    await agentBus.agent({ name: "big", skills: [{ id: "digest" }, { id: "emit" }, { id: "huge" }] }, {
      digest: (ctx) => sha(Buffer.from(ctx.userMessage.parts[0]!.raw!, "base64")),
      emit: () => [{ raw: output.toString("base64"), mediaType: "application/octet-stream" }],
      huge: () => "z".repeat(9 * MB),
    });
    await eventually(() => client.registry.instances(agentBus.id).length === 1);
    const sniffed: Buffer[] = [];
    const sub = client.nc.subscribe(`mesh.${tenant}.agent.>`, { callback: (_e, m) => void sniffed.push(Buffer.from(m.data)) });
    const reply = await client.call("digest", [{ raw: input.toString("base64"), mediaType: "application/octet-stream" }]);
    expect(reply.parts[0]!.text).toBe(sha(input));
    const back = await client.call("emit", "x");
    expect(sha(Buffer.from(back.parts[0]!.raw!, "base64"))).toBe(sha(output));
    sub.unsubscribe();
    // On the wire: a reference, not the bytes.
    expect(sniffed.length).toBeGreaterThan(0);
    expect(sniffed.every((b) => b.length < 64 * 1024)).toBe(true);
    expect(sniffed.some((b) => b.includes(BLOB))).toBe(true);
    // Over the limit: refused before anything is sent, and a reply over it comes back as that error.
    await rejectsWith(client.call("digest", "y".repeat(9 * MB)), "PAYLOAD_TOO_LARGE");
    await rejectsWith(client.call("huge", "x"), "PAYLOAD_TOO_LARGE");
  });

  it("a blob that is not the one its reference names is refused BAD_SIGNATURE", async () => {
    const { agentBus, client } = await pair();
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.userMessage.parts });
    const handle = await client.submit("echo", "x".repeat(600_000));
    expect((await handle.result({ timeout: 20_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    const snapshot = await client.nc.request(`$JS.API.DIRECT.GET.KV_${client.subjects.bucket("tasks")}`, JSON.stringify({ last_by_subj: `$KV.${client.subjects.bucket("tasks")}.${client.id}.${handle.id}` }));
    const stored = JSON.parse(Buffer.from(snapshot.data).toString()) as Task;
    const name = (stored.artifacts[0]!.parts[0]!.data as { name: string }).name;
    // Someone writes other content under the artifact's object name.
    const os = await new Objm(client.nc).open(client.subjects.bucket("blobs"));
    await os.putBlob({ name }, randomBytes(600_016));
    await rejectsWith(client.task(handle.id), "BAD_SIGNATURE");
  }, 60_000);

  it("over maxTaskBytes: a submit is refused before anything is written; a task that outgrows it ends FAILED and its work item is acked", async () => {
    const { agentBus, client } = await pair({ maxTaskBytes: 3 * MB });
    await agentBus.agent({ name: "grow", skills: [{ id: "grow" }] }, {
      grow: async (ctx) => {
        for (let i = 0; i < 4; i++) await ctx.artifact([{ raw: randomBytes(MB).toString("base64") }], { name: `chunk${i}` });
        return "never";
      },
    });
    const jsm = await jetstreamManager(client.nc);
    const blobStream = `OBJ_${client.subjects.bucket("blobs")}`;
    await client.ensureTasks();
    const blobsBefore = (await jsm.streams.info(blobStream)).state.messages;
    const err = await rejectsWith(client.submit("grow", [{ raw: randomBytes(4 * MB).toString("base64") } as Part]), "PAYLOAD_TOO_LARGE");
    expect(err.message).toMatch(/maxTaskBytes/);
    expect((await client.tasks()).totalSize).toBe(0);
    expect((await jsm.streams.info(client.subjects.stream("WORK"))).state.messages).toBe(0);
    expect((await jsm.streams.info(blobStream)).state.messages).toBe(blobsBefore);

    const handle = await client.submit("grow", [{ raw: randomBytes(MB / 2).toString("base64") } as Part]);
    const failed = await handle.result({ timeout: 30_000 });
    expect(failed.status.state).toBe("TASK_STATE_FAILED");
    expect(failed.status.message!.parts[0]!.text).toMatch(/^PAYLOAD_TOO_LARGE: task .* exceeds the limit of 3145728 bytes per task/);
    // The artifacts that fit are there, the one that did not is not.
    expect(failed.artifacts.map((a) => a.name)).toEqual(["chunk0", "chunk1"]);
    await eventually(async () => (await jsm.streams.info(client.subjects.stream("WORK"))).state.messages === 0, 5000);
  }, 60_000);
});
