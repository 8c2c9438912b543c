/**
 * Fails when docs/PROTOCOL.md or docs/ARCHITECTURE.md and the code drift
 * apart: public calls, subjects, headers, streams, buckets, error codes.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { Command } from "commander";
import { Agent, AclStore, Bus, ErrorCodes, ErrorTable, Header, Schedules, Session, Subjects, TaskHandle } from "../../core/index.js";
import { program } from "../../cli/program.js";

const read = (f: string) => readFileSync(new URL(`../../docs/${f}`, import.meta.url), "utf8");
const protocol = read("PROTOCOL.md");
const architecture = read("ARCHITECTURE.md");

/** Public methods of a class (prototype functions, not getters, not the constructor). */
function methods(cls: { prototype: object }): string[] {
  return Object.entries(Object.getOwnPropertyDescriptors(cls.prototype))
    .filter(([name, d]) => name !== "constructor" && typeof d.value === "function")
    .map(([name]) => name)
    .sort();
}

/** Names in the first column of the library table: `bus.x(`, `agent.x(`, `bus.acl.x(`. */
function documented(prefix: string): string[] {
  const section = protocol.slice(protocol.indexOf("## Library calls"), protocol.indexOf("## CLI"));
  const re = new RegExp(`^\\| \`${prefix.replace(".", "\\.")}\\.([a-zA-Z]+)\\(`, "gm");
  return [...section.matchAll(re)].map((m) => m[1]!).sort();
}

// The pattern each Subjects method produces, with placeholders put back.
const s = new Subjects("rootx", "tx");
const placeholders = (subject: string) =>
  subject.replace(/^rootx\.tx\./, "<root>.<t>.").replace("capx", "<cap>").replace("agentx", "<agent>").replace("taskx", "<task>").replace("kindx", "<kind>").replace("submitterx", "<submitter>").replace("instancex", "<instance>").replace("creatorx", "<creator>").replace("idx", "<id>").replace("regionx", "<region>");
const subjectPatterns = [
  s.cap("capx"), s.agentCall("agentx"), s.instanceCall("agentx", "instancex"), s.work("capx"), s.inbox("agentx"), s.taskEvents("taskx"), s.taskEventLog("submitterx", "taskx"),
  s.taskCancel("taskx"), s.presence("agentx"), s.audit("kindx"), s.dlq("capx"), s.delayedWork("submitterx", "taskx"),
  s.work("capx", "high"), s.work("capx", "low"), s.schedule("creatorx", "idx"), s.tick("capx", "idx"), s.ticks("capx"), s.outbox("submitterx", "taskx"),
  // A federated bus's region planes.
  ...[s.inRegion("regionx")].flatMap((r) => [r.work("capx"), r.work("capx", "high"), r.work("capx", "low"), r.taskEventLog("submitterx", "taskx"), r.dlq("capx"), r.delayedWork("submitterx", "taskx")]),
].map(placeholders);
const streams = (["WORK", "INBOX", "EVENTS", "DLQ", "AUDIT", "SCHEDULES", "OUTBOX"] as const).map((k) => `MESH_<T>_${k}`);
const buckets = (["agents", "presence", "tasks", "sessions", "acl", "revoked", "push", "replay", "owners", "blobs", "schedules", "limits"] as const).map((k) => `mesh_<t>_${k}`);

describe("docs/PROTOCOL.md matches the code", () => {
  it("lists every public Bus and Agent method, and only those", () => {
    expect(documented("bus")).toEqual(methods(Bus));
    expect(documented("agent")).toEqual(methods(Agent));
    expect(documented("handle")).toEqual(methods(TaskHandle));
    expect(documented("session")).toEqual(methods(Session));
    expect(documented("bus.schedules")).toEqual(methods(Schedules));
  });

  it("lists the ACL store's calls (stop is internal to bus.close)", () => {
    expect(documented("bus.acl")).toEqual(methods(AclStore).filter((m) => m !== "stop"));
  });

  it("names only subjects the code builds", () => {
    for (const doc of [protocol, architecture]) {
      const named = new Set([...doc.matchAll(/`(<root>\.<t>\.[^`]+)`/g)].map((m) => m[1]!));
      for (const subject of named) {
        // A stream filter such as `<root>.<t>.audit.>` covers the subjects under it.
        // `*` in a stream filter stands for one placeholder token.
        const tokens = subject.split(".");
        const matches = (p: string) => {
          const pt = p.split(".");
          return pt.length === tokens.length && pt.every((t, i) => tokens[i] === t || (tokens[i] === "*" && t.startsWith("<")));
        };
        const ok = subject.endsWith(".>") ? subjectPatterns.some((p) => p.startsWith(subject.slice(0, -1))) : subjectPatterns.some(matches);
        expect(ok, `${subject} is not built by core/wire/subjects.ts`).toBe(true);
      }
    }
    for (const pattern of subjectPatterns) expect(architecture).toContain(`\`${pattern}\``);
  });

  it("names only headers the envelope uses, and ARCHITECTURE.md documents all of them", () => {
    const known = Object.values(Header) as string[];
    for (const doc of [protocol, architecture]) {
      for (const [, h] of doc.matchAll(/`(Mesh-[A-Za-z-]+|Nats-Msg-Id|traceparent|tracestate)`/g)) expect(known).toContain(h);
    }
    for (const h of known) expect(architecture).toContain(`\`${h}\``);
  });

  it("names only streams and buckets the code creates or reserves", () => {
    for (const doc of [protocol, architecture]) {
      for (const [, name] of doc.matchAll(/`(MESH_<T>_[A-Z]+|mesh_<t>_[a-z]+)`/g)) expect([...streams, ...buckets]).toContain(name);
    }
    for (const name of [...streams, ...buckets]) expect(architecture).toContain(`\`${name}\``);
  });

  it("the CLI table names exactly the commands of the command tree", () => {
    const leaves = (c: Command, path: string[]): string[] =>
      c.commands.length ? c.commands.flatMap((sub) => leaves(sub, [...path, sub.name()])) : [path.join(" ")];
    const built = leaves(program(), ["agentbus"]).sort();
    const section = protocol.slice(protocol.indexOf("## CLI"), protocol.indexOf("## HTTP gateway"));
    const listed = [...section.matchAll(/^\| `(agentbus [a-z0-9 ]+)`/gm)].map((m) => m[1]!.trim()).sort();
    expect(listed).toEqual(built);
  });

  it("ARCHITECTURE.md lists every error code as the error table says", () => {
    const yes = (b: boolean) => (b ? "yes" : "no");
    for (const code of ErrorCodes) {
      const i = ErrorTable[code];
      expect(architecture).toContain(`| \`${code}\` | ${yes(i.wire)} | ${yes(i.retryable)} | ${yes(i.audited)} | ${i.status} | ${i.meaning} |`);
    }
  });
});
