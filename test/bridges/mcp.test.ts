import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { LoggingMessageNotificationSchema, ToolListChangedNotificationSchema, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { describe, expect, it, onTestFailed } from "vitest";
import { textOf, type Bus, type ConnectOptions } from "../../core/index.js";
import { eventually, grant, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { startServer } from "../../nats/index.js";

const main = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));
const text = (r: CallToolResult) => r.content.map((c) => (c.type === "text" ? c.text : "")).join("");

/** Agents for the scenario: echo, and math with a schema, a failure, steps (status updates) and a slow task. */
async function startAgents(open: (o: Partial<ConnectOptions>) => Promise<Bus>, tenant: string) {
  const state = { slowStarted: false };
  const echoBus = await open({ tenant, insecureAllowAll: true });
  await echoBus.agent({ name: "echo", skills: [{ id: "echo", description: "echo the text" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
  const mathBus = await open({ tenant, insecureAllowAll: true });
  await mathBus.agent(
    { name: "math", skills: [{ id: "math.add", description: "adds", inputSchema: { type: "object", required: ["a", "b"], properties: { a: { type: "number" }, b: { type: "number" } } } }, { id: "math.fail" }, { id: "math.steps" }, { id: "math.slow" }] },
    {
      "math.add": (ctx) => {
        const { a, b } = ctx.input as { a: number; b: number };
        return { sum: a + b };
      },
      "math.fail": () => {
        throw Object.assign(new Error("cannot"), {});
      },
      "math.steps": async (ctx) => {
        for (const step of ["one", "two", "three"]) {
          await ctx.status(step);
          await new Promise((resolve) => setTimeout(resolve, 150));
        }
        return "stepped";
      },
      "math.slow": async (ctx) => {
        state.slowStarted = true;
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
        return "never";
      },
    },
    { tasks: { maxDeliver: 1 } },
  );
  return { echoBus, mathBus, state };
}

/**
 * What every MCP transport must do: list tools, call them, report progress and
 * failures, validate input, cancel, announce list changes.
 */
async function exercise(client: Client, open: (o: Partial<ConnectOptions>) => Promise<Bus>, tenant: string, agents: Awaited<ReturnType<typeof startAgents>>): Promise<void> {
  const { mathBus, state } = agents;
  let changed = 0;
  client.setNotificationHandler(ToolListChangedNotificationSchema, () => void changed++);
  const tools = (await eventually(async () => {
    const t = (await client.listTools()).tools;
    return t.length === 7 ? t : undefined;
  }))!;
  expect(tools.map((t) => t.name)).toEqual(["mesh__get_messages", "mesh__reply_message", "echo", "math.add", "math.fail", "math.slow", "math.steps"]);
  expect(tools.find((t) => t.name === "echo")!.inputSchema).toMatchObject({ type: "object", required: ["text"] });
  expect(tools.find((t) => t.name === "math.add")!.inputSchema).toMatchObject({ required: ["a", "b"] });
  expect(client.getServerCapabilities()?.tools?.listChanged).toBe(true);

  expect(text((await client.callTool({ name: "echo", arguments: { text: "hi" } })) as CallToolResult)).toBe("echo: hi");
  const sum = (await client.callTool({ name: "math.add", arguments: { a: 2, b: 3 } })) as CallToolResult;
  expect(sum.structuredContent).toEqual({ sum: 5 });

  const failed = (await client.callTool({ name: "math.fail", arguments: { text: "x" } })) as CallToolResult;
  expect(failed.isError).toBe(true);
  expect(text(failed)).toMatch(/FAILED: .*cannot/);

  await expect(client.callTool({ name: "math.add", arguments: { a: "two" } })).rejects.toThrow(/must have required property|must be number/);
  await expect(client.callTool({ name: "nope", arguments: {} })).rejects.toThrow(/unknown tool/);

  // Progress: every status update of the task, in order, while it runs; twice on one connection, then a call without a token.
  for (let round = 0; round < 2; round++) {
    const seen: string[] = [];
    const result = (await client.callTool({ name: "math.steps", arguments: { text: "go" } }, undefined, { onprogress: (p) => void seen.push(p.message ?? "") })) as CallToolResult;
    expect(text(result)).toBe("stepped");
    expect(seen.filter((m) => ["one", "two", "three"].includes(m))).toEqual(["one", "two", "three"]);
  }
  expect(text((await client.callTool({ name: "math.steps", arguments: { text: "go" } })) as CallToolResult)).toBe("stepped");

  // Logging: once the client sets a level, each status update of its calls' tasks is a log message (info).
  expect(client.getServerCapabilities()?.logging).toBeDefined();
  const logs: Array<{ level: string; data: { message?: string } }> = [];
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(n.params as never));
  await client.setLoggingLevel("info");
  expect(text((await client.callTool({ name: "math.steps", arguments: { text: "go" } })) as CallToolResult)).toBe("stepped");
  await eventually(() => logs.filter((l) => ["one", "two", "three"].includes(l.data.message ?? "")).length === 3);
  expect(logs.every((l) => l.level === "info")).toBe(true);
  await client.setLoggingLevel("warning");
  const logged = logs.length;
  await client.callTool({ name: "math.steps", arguments: { text: "go" } });
  expect(logs.length).toBe(logged);

  // An MCP cancellation cancels the bus task.
  const abort = new AbortController();
  const slow = client.callTool({ name: "math.slow", arguments: { text: "wait" } }, undefined, { signal: abort.signal });
  await eventually(() => state.slowStarted);
  // Running, as the bus records it (the worker's first snapshot write names the agent), then cancelled.
  await eventually(async () => (await mathBus.tasks({ state: "TASK_STATE_WORKING" })).tasks.length === 1);
  abort.abort("user gave up");
  await expect(slow).rejects.toThrow();
  // The serving agent may list the tasks it served (the submitter is the bridge).
  await eventually(async () => (await mathBus.tasks({ state: "TASK_STATE_CANCELED" })).tasks.length === 1);

  // An agent that starts adds its tools and tells the client.
  const joined = changed;
  const lateBus = await open({ tenant, insecureAllowAll: true });
  await lateBus.agent({ name: "late", skills: [{ id: "late" }] }, { late: () => "here" });
  await eventually(() => changed > joined, 10_000);
  expect((await client.listTools()).tools.map((t) => t.name)).toContain("late");
  await lateBus.close();

  // An agent that stops removes its tools and tells the client.
  const before = changed;
  await mathBus.close();
  await eventually(() => changed > before, 10_000);
  expect((await client.listTools()).tools.map((t) => t.name)).toEqual(["mesh__get_messages", "mesh__reply_message", "echo"]);
}

describe("agentbus mcp (stdio) with the official MCP client", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("lists capabilities as tools, calls them, reports progress and failures, validates input, cancels, announces list changes", async () => {
    const agents = await startAgents(open, "mcp");
    const transport = new StdioClientTransport({ command: process.execPath, args: [main, "mcp", "--nats", nats.server.url, "--tenant", "mcp"], stderr: "pipe" });
    // Read the server's stderr: an unread pipe fills and blocks its writes.
    let serverLog = "";
    transport.stderr?.on("data", (chunk: Buffer) => void (serverLog = (serverLog + chunk.toString()).slice(-20_000)));
    onTestFailed(() => console.error(`--- agentbus mcp stderr ---\n${serverLog}\n--- nats-server log ---\n${nats.server.logTail()}`));
    const client = new Client({ name: "test", version: "1.0.0" });
    await client.connect(transport);
    try {
      await exercise(client, open, "mcp", agents);
    } finally {
      await client.close();
    }
  }, 60_000);
});

describe("agentbus mcp (stdio) at 2026-07-28 (SDK v2 client)", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("a 2026-07-28 client over stdio: tools, calls with progress, input required, resources", async () => {
    const v2 = await import("@modelcontextprotocol/client");
    const { StdioClientTransport: V2Stdio } = await import("@modelcontextprotocol/client/stdio");
    const agents = await startAgents(open, "mcpstdio26");
    const askBus = await open({ tenant: "mcpstdio26", insecureAllowAll: true });
    await askBus.agent({ name: "asker", skills: [{ id: "ask" }] }, { ask: (ctx) => (ctx.history.length < 2 ? ctx.inputRequired("Your name?") : `hello ${ctx.text}`) });
    const transport = new V2Stdio({ command: process.execPath, args: [main, "mcp", "--nats", nats.server.url, "--tenant", "mcpstdio26"], stderr: "pipe" });
    const client = new v2.Client({ name: "stdio-modern", version: "1.0.0" }, { capabilities: { elicitation: { form: {} } }, versionNegotiation: { mode: { pin: "2026-07-28" } } });
    client.setRequestHandler("elicitation/create", async () => ({ action: "accept", content: { answer: "Ada" } }) as never);
    await client.connect(transport);
    try {
      expect(client.getNegotiatedProtocolVersion()).toBe("2026-07-28");
      await eventually(async () => (await client.listTools()).tools.some((t) => t.name === "ask"));
      expect(((await client.callTool({ name: "echo", arguments: { text: "piped" } })).content as Array<{ text?: string }>)[0]?.text).toBe("echo: piped");
      const seen: string[] = [];
      await client.callTool({ name: "math.steps", arguments: { text: "go" } }, { onprogress: (p: { message?: string }) => void seen.push(p.message ?? "") });
      expect(seen.filter((m) => ["one", "two", "three"].includes(m))).toEqual(["one", "two", "three"]);
      expect(((await client.callTool({ name: "ask", arguments: { text: "hi" } })).content as Array<{ text?: string }>)[0]?.text).toBe("hello Ada");
      expect((await client.listResources()).resources.map((r) => r.uri)).toContain("agentbus://agents/asker");
      void agents;
    } finally {
      await client.close();
    }
  }, 60_000);
});

describe("agentbus mcp (stdio): its lifecycle follows its client's", () => {
  it.each(["stdin closes", "SIGTERM"])("exits within 2 s when %s, also with NATS gone (reconnecting)", async (how) => {
    const server = await startServer();
    try {
      const transport = new StdioClientTransport({ command: process.execPath, args: [main, "mcp", "--nats", server.url, "--tenant", "mcpexit"], stderr: "pipe" });
      transport.stderr?.on("data", () => {});
      const client = new Client({ name: "test", version: "1.0.0" });
      await client.connect(transport);
      await client.listTools();
      const child = (transport as unknown as { _process: import("node:child_process").ChildProcess })._process;
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      // NATS goes away: the server's connection is reconnecting, forever.
      await server.stop("SIGKILL");
      await new Promise((r) => setTimeout(r, 300));
      const start = Date.now();
      if (how === "SIGTERM") child.kill("SIGTERM");
      else child.stdin!.end();
      expect(await exited).toBe(0);
      expect(Date.now() - start).toBeLessThan(2_000);
      await client.close().catch(() => {});
    } finally {
      await server.cleanup();
    }
  }, 30_000);
});

describe("MCP over Streamable HTTP at /mcp", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("lists, calls, reports progress and failures, validates input, cancels, announces list changes (open mode)", async () => {
    const Fastify = (await import("fastify")).default;
    const { mcpHttp } = await import("../../bridges/mcp/index.js");
    const { StreamableHTTPClientTransport } = await import("@modelcontextprotocol/sdk/client/streamableHttp.js");
    const agents = await startAgents(open, "mcpopen");
    const app = Fastify({ forceCloseConnections: true });
    await app.register(mcpHttp, { bus: await open({ tenant: "mcpopen" }), open: true });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const client = new Client({ name: "http-test", version: "1.0.0" });
    try {
      await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`)));
      await exercise(client, open, "mcpopen", agents);
      // A large argument: a request body past fastify's default 1 MiB, the task's content through the object store.
      const big = "x".repeat(3 * 1024 * 1024);
      expect(text((await client.callTool({ name: "echo", arguments: { text: big } })) as CallToolResult)).toBe(`echo: ${big}`);
    } finally {
      await client.close();
      await app.close();
    }
  }, 60_000);

  it("maps a result's parts to MCP content: text, image, audio, embedded resources, resource links, structured content", async () => {
    const Fastify = (await import("fastify")).default;
    const { mcpHttp } = await import("../../bridges/mcp/index.js");
    const { StreamableHTTPClientTransport } = await import("@modelcontextprotocol/sdk/client/streamableHttp.js");
    const png = Buffer.from("89504e470d0a1a0a", "hex").toString("base64");
    const wav = Buffer.from("RIFF....WAVE").toString("base64");
    const pdf = Buffer.from("%PDF-1.7").toString("base64");
    const agentBus = await open({ tenant: "mcpmedia", insecureAllowAll: true });
    await agentBus.agent({ name: "media", skills: [{ id: "media" }, { id: "figures" }] }, {
      media: () => [
        { text: "caption" },
        { raw: png, mediaType: "image/png" },
        { raw: wav, mediaType: "audio/wav" },
        { raw: pdf, mediaType: "application/pdf", filename: "doc.pdf" },
        { url: "https://example.com/files/report.pdf", mediaType: "application/pdf", filename: "report.pdf" },
        { text: "# notes", mediaType: "text/markdown", metadata: { mcpType: "resource", uri: "file:///notes.md" } },
      ],
      figures: () => ({ total: 3, unit: "apples" }),
    });
    const app = Fastify({ forceCloseConnections: true });
    await app.register(mcpHttp, { bus: await open({ tenant: "mcpmedia" }), open: true });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const client = new Client({ name: "media-test", version: "1.0.0" });
    try {
      await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`)));
      await eventually(async () => (await client.listTools()).tools.some((t) => t.name === "media"));
      const result = (await client.callTool({ name: "media", arguments: { text: "show" } })) as CallToolResult;
      expect(result.isError).toBeFalsy();
      const [caption, image, audio, blob, link, notes] = result.content;
      expect(caption).toEqual({ type: "text", text: "caption" });
      expect(image).toEqual({ type: "image", data: png, mimeType: "image/png" });
      expect(audio).toEqual({ type: "audio", data: wav, mimeType: "audio/wav" });
      expect(blob).toMatchObject({ type: "resource", resource: { blob: pdf, mimeType: "application/pdf", uri: expect.stringMatching(/^agentbus:\/\/tasks\/[A-Za-z0-9_-]+\/artifacts\/.+\/3$/) } });
      expect(link).toEqual({ type: "resource_link", uri: "https://example.com/files/report.pdf", name: "report.pdf", mimeType: "application/pdf" });
      expect(notes).toEqual({ type: "resource", resource: { uri: "file:///notes.md", text: "# notes", mimeType: "text/markdown" } });
      const figures = (await client.callTool({ name: "figures", arguments: { text: "count" } })) as CallToolResult;
      expect(figures.structuredContent).toEqual({ total: 3, unit: "apples" });
      expect(JSON.parse(text(figures))).toEqual({ total: 3, unit: "apples" });

      // Resources: the agents' cards, and the task's content by the URIs its result gave.
      const { resources } = await client.listResources();
      expect(resources.map((r) => r.uri)).toContain("agentbus://agents/media");
      const card = await client.readResource({ uri: "agentbus://agents/media" });
      expect(JSON.parse((card.contents[0] as { text: string }).text)).toMatchObject({ name: "media", skills: [{ id: "media" }, { id: "figures" }] });
      expect((await client.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate)).toEqual(["agentbus://tasks/{taskId}", "agentbus://tasks/{taskId}/artifacts/{artifactId}/{part}"]);
      const embedded = (blob as { resource: { uri: string } }).resource.uri;
      expect((await client.readResource({ uri: embedded })).contents[0]).toEqual({ uri: embedded, blob: pdf, mimeType: "application/pdf" });
      const taskUri = embedded.split("/artifacts/")[0]!;
      expect(JSON.parse(((await client.readResource({ uri: taskUri })).contents[0] as { text: string }).text)).toMatchObject({ status: { state: "TASK_STATE_COMPLETED" } });
      // Not found: -32602 with the URI (SEP-2164), as the SDK answers it.
      await expect(client.readResource({ uri: "agentbus://tasks/no-such-task" })).rejects.toMatchObject({ code: -32602 });
      await expect(client.readResource({ uri: "file:///etc/passwd" })).rejects.toMatchObject({ code: -32602 });
    } finally {
      await client.close();
      await app.close();
    }
  }, 60_000);

  it("a task that needs input asks the client (elicitation) and goes on with its answer; a client that cannot answer or declines cancels it", async () => {
    const Fastify = (await import("fastify")).default;
    const { mcpHttp } = await import("../../bridges/mcp/index.js");
    const { StreamableHTTPClientTransport } = await import("@modelcontextprotocol/sdk/client/streamableHttp.js");
    const { ElicitRequestSchema } = await import("@modelcontextprotocol/sdk/types.js");
    const agentBus = await open({ tenant: "mcpask", insecureAllowAll: true });
    await agentBus.agent({ name: "asker", skills: [{ id: "ask" }, { id: "form" }] }, {
      ask: (ctx) => (ctx.history.length < 2 ? ctx.inputRequired("What is your name?") : `hello ${ctx.text}`),
      form: (ctx) =>
        ctx.history.length < 2
          ? ctx.inputRequired([{ text: "Pick a size" }, { data: { type: "object", properties: { size: { type: "string", enum: ["S", "M", "L"] }, count: { type: "integer" } }, required: ["size"] } }])
          : `${(ctx.input as { count?: number }).count ?? 1} × ${(ctx.input as { size: string }).size}`,
    });
    const bridgeBus = await open({ tenant: "mcpask" });
    const app = Fastify({ forceCloseConnections: true });
    await app.register(mcpHttp, { bus: bridgeBus, open: true });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const asked: Array<{ message: string; requestedSchema: unknown }> = [];
    let reply: (req: { params: { message: string; requestedSchema: unknown } }) => Record<string, unknown> = () => ({ action: "accept", content: { answer: "Ada" } });
    const client = new Client({ name: "elicit-test", version: "1.0.0" }, { capabilities: { elicitation: { form: {} } } });
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      const params = req.params as { message: string; requestedSchema: unknown };
      asked.push(params);
      return reply({ params }) as never;
    });
    const plain = new Client({ name: "no-elicitation", version: "1.0.0" });
    try {
      await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`)));
      await plain.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`)));
      await eventually(async () => (await client.listTools()).tools.some((t) => t.name === "ask"));
      expect(text((await client.callTool({ name: "ask", arguments: { text: "hi" } })) as CallToolResult)).toBe("hello Ada");
      expect(asked[0]).toMatchObject({ message: "What is your name?", requestedSchema: { type: "object", properties: { answer: { type: "string" } }, required: ["answer"] } });
      // The agent's own form schema is what the client is asked to fill; the answer reaches the agent as data.
      reply = () => ({ action: "accept", content: { size: "M", count: 2 } });
      expect(text((await client.callTool({ name: "form", arguments: { text: "order" } })) as CallToolResult)).toBe("2 × M");
      expect(asked[1]).toMatchObject({ message: "Pick a size", requestedSchema: { properties: { size: { enum: ["S", "M", "L"] } } } });
      // Declined: the task is cancelled and the call says why.
      reply = () => ({ action: "decline" });
      const declined = (await client.callTool({ name: "ask", arguments: { text: "hi" } })) as CallToolResult;
      expect(declined.isError).toBe(true);
      expect(text(declined)).toMatch(/decline.*cancelled/);
      // A client without the elicitation capability cannot be asked: the task is cancelled, not left waiting.
      const cannot = (await plain.callTool({ name: "ask", arguments: { text: "hi" } })) as CallToolResult;
      expect(cannot.isError).toBe(true);
      expect(text(cannot)).toMatch(/no elicitation capability/);
      await eventually(async () => (await bridgeBus.tasks({ state: "TASK_STATE_CANCELED" })).tasks.length === 2);
      expect((await bridgeBus.tasks({ state: "TASK_STATE_INPUT_REQUIRED" })).tasks).toHaveLength(0);
    } finally {
      await client.close();
      await plain.close();
      await app.close();
    }
  }, 60_000);

  it("serves the 2026-07-28 revision statelessly on the same endpoint (SDK v2 client): discover, tools with cache hints, calls with progress, structured content; 2025-11-25 clients as before", async () => {
    const Fastify = (await import("fastify")).default;
    const { mcpHttp } = await import("../../bridges/mcp/index.js");
    const v2 = await import("@modelcontextprotocol/client");
    const { StreamableHTTPClientTransport } = await import("@modelcontextprotocol/sdk/client/streamableHttp.js");
    const agents = await startAgents(open, "mcpmodern");
    const app = Fastify({ forceCloseConnections: true });
    await app.register(mcpHttp, { bus: await open({ tenant: "mcpmodern" }), open: true });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const modern = new v2.Client({ name: "modern", version: "1.0.0" }, { versionNegotiation: { mode: { pin: "2026-07-28" } } });
    const legacy = new Client({ name: "legacy", version: "1.0.0" });
    try {
      await modern.connect(new v2.StreamableHTTPClientTransport(new URL(`${url}/mcp`)));
      expect(modern.getNegotiatedProtocolVersion()).toBe("2026-07-28");
      const listed = (await eventually(async () => {
        const r = await modern.listTools();
        return r.tools.some((t) => t.name === "math.steps") ? r : undefined;
      }))!;
      expect(listed.tools.map((t) => t.name)).toContain("echo");
      expect(listed).toMatchObject({ ttlMs: 5000, cacheScope: "private" });
      const echoed = await modern.callTool({ name: "echo", arguments: { text: "stateless" } });
      expect((echoed.content as Array<{ text?: string }>)[0]?.text).toBe("echo: stateless");
      expect((await modern.callTool({ name: "math.add", arguments: { a: 2, b: 3 } })).structuredContent).toEqual({ sum: 5 });
      const seen: string[] = [];
      const stepped = await modern.callTool({ name: "math.steps", arguments: { text: "go" } }, { onprogress: (p: { message?: string }) => void seen.push(p.message ?? "") });
      expect((stepped.content as Array<{ text?: string }>)[0]?.text).toBe("stepped");
      expect(seen.filter((m) => ["one", "two", "three"].includes(m))).toEqual(["one", "two", "three"]);
      await expect(modern.callTool({ name: "math.add", arguments: { a: "two" } })).rejects.toThrow(/must have required property|must be number/);
      // Resources on this revision too: a card, and an unknown URI as the revision's not-found error (-32602, with the URI).
      expect((await modern.listResources()).resources.map((r) => r.uri)).toContain("agentbus://agents/echo");
      expect(JSON.parse(((await modern.readResource({ uri: "agentbus://agents/echo" })).contents[0] as { text: string }).text)).toMatchObject({ name: "echo" });
      await expect(modern.readResource({ uri: "agentbus://tasks/no-such-task" })).rejects.toMatchObject({ code: -32602 });
      // No session on this revision: nothing for the server to keep.
      await legacy.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`)));
      expect(legacy.getServerVersion()?.name).toBe("agentbus");
      expect(((await legacy.callTool({ name: "echo", arguments: { text: "sessionful" } })) as CallToolResult).content[0]).toEqual({ type: "text", text: "echo: sessionful" });
      void agents;
    } finally {
      await modern.close();
      await legacy.close();
      await app.close();
    }
  }, 60_000);

  it("2026-07-28: a task that needs input ends the request with an input-required result; the client's retry with its answer continues the same task", async () => {
    const Fastify = (await import("fastify")).default;
    const { mcpHttp } = await import("../../bridges/mcp/index.js");
    const v2 = await import("@modelcontextprotocol/client");
    const agentBus = await open({ tenant: "mcpmrtr", insecureAllowAll: true });
    await agentBus.agent({ name: "asker", skills: [{ id: "ask" }, { id: "form" }] }, {
      ask: (ctx) => (ctx.history.length < 2 ? ctx.inputRequired("What is your name?") : `hello ${ctx.text}`),
      form: (ctx) =>
        ctx.history.length < 2
          ? ctx.inputRequired([{ text: "Pick a size" }, { data: { type: "object", properties: { size: { type: "string", enum: ["S", "M", "L"] } }, required: ["size"] } }])
          : `size ${(ctx.input as { size: string }).size}`,
    });
    const bridgeBus = await open({ tenant: "mcpmrtr" });
    const app = Fastify({ forceCloseConnections: true });
    await app.register(mcpHttp, { bus: bridgeBus, open: true });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const asked: Array<{ message: string; requestedSchema: unknown }> = [];
    let reply: () => Record<string, unknown> = () => ({ action: "accept", content: { answer: "Ada" } });
    const client = new v2.Client({ name: "modern-elicit", version: "1.0.0" }, { capabilities: { elicitation: { form: {} } }, versionNegotiation: { mode: { pin: "2026-07-28" } } });
    client.setRequestHandler("elicitation/create", async (req) => {
      asked.push(req.params as { message: string; requestedSchema: unknown });
      return reply() as never;
    });
    try {
      await client.connect(new v2.StreamableHTTPClientTransport(new URL(`${url}/mcp`)));
      await eventually(async () => (await client.listTools()).tools.some((t) => t.name === "ask"));
      const hello = await client.callTool({ name: "ask", arguments: { text: "hi" } });
      expect((hello.content as Array<{ text?: string }>)[0]?.text).toBe("hello Ada");
      expect(asked[0]).toMatchObject({ message: "What is your name?", requestedSchema: { properties: { answer: { type: "string" } } } });
      reply = () => ({ action: "accept", content: { size: "L" } });
      const sized = await client.callTool({ name: "form", arguments: { text: "order" } });
      expect((sized.content as Array<{ text?: string }>)[0]?.text).toBe("size L");
      // One task per call, continued, not a new task per round: two calls, two tasks, both completed.
      expect((await bridgeBus.tasks({ state: "TASK_STATE_COMPLETED" })).tasks).toHaveLength(2);
      reply = () => ({ action: "decline" });
      const declined = await client.callTool({ name: "ask", arguments: { text: "hi" } });
      expect(declined.isError).toBe(true);
      await eventually(async () => (await bridgeBus.tasks({ state: "TASK_STATE_CANCELED" })).tasks.length === 1);
    } finally {
      await client.close();
      await app.close();
    }
  }, 60_000);

  it("2026-07-28 tasks extension: a call that does not end quickly answers with its bus task; tasks/get, tasks/update and tasks/cancel follow it, from any replica", async () => {
    const Fastify = (await import("fastify")).default;
    const { mcpHttp } = await import("../../bridges/mcp/index.js");
    const agentBus = await open({ tenant: "mcptasks", insecureAllowAll: true });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await agentBus.agent({ name: "jobs", skills: [{ id: "quick" }, { id: "slow" }, { id: "fails" }, { id: "asks" }, { id: "hangs" }] }, {
      quick: (ctx) => `quick ${ctx.text}`,
      slow: async (ctx) => (await gate, `slow ${ctx.text}`),
      fails: async () => {
        await new Promise((r) => setTimeout(r, 1_300));
        throw new Error("broken on purpose");
      },
      asks: async (ctx) => {
        if (ctx.history.length < 2) {
          await new Promise((r) => setTimeout(r, 1_300));
          return ctx.inputRequired("Which colour?");
        }
        return `colour ${ctx.text}`;
      },
      hangs: (ctx) => new Promise((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
    }, { tasks: { maxDeliver: 1 } });
    // Two replicas of one gateway: one identity (its seed), two processes' worth of connections.
    const { Identity } = await import("../../core/index.js");
    const gateway = Identity.generate();
    const replicas = await Promise.all([0, 1].map(async () => {
      const app = Fastify({ forceCloseConnections: true });
      await app.register(mcpHttp, { bus: await open({ tenant: "mcptasks", identity: gateway }), open: true });
      return { app, url: await app.listen({ port: 0, host: "127.0.0.1" }) };
    }));
    /** A 2026-07-28 client by hand (the SDK's client does not speak the tasks extension): the per-request envelope, the routing headers. */
    const connect = (url: string, tasks: boolean) => {
      let id = 0;
      const request = async (method: string, params: Record<string, unknown>): Promise<Record<string, any>> => {
        const capabilities = { elicitation: { form: {} }, ...(tasks && { extensions: { "io.modelcontextprotocol/tasks": {} } }) };
        const _meta = { "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": capabilities, "io.modelcontextprotocol/clientInfo": { name: "tasks-test", version: "1.0.0" } };
        const name = typeof params.name === "string" ? params.name : typeof params.taskId === "string" ? params.taskId : undefined;
        const res = await fetch(`${url}/mcp`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-protocol-version": "2026-07-28", "mcp-method": method, ...(name !== undefined && { "mcp-name": name }) },
          body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method, params: { ...params, _meta } }),
        });
        const text = await res.text();
        // JSON, or an SSE stream whose last data line is the response.
        const body = JSON.parse(res.headers.get("content-type")?.includes("event-stream") ? text.split("\n").filter((l) => l.startsWith("data: ")).at(-1)!.slice(6) : text) as { result?: Record<string, any>; error?: { code: number; message: string } };
        if (body.error) throw Object.assign(new Error(body.error.message), { code: body.error.code });
        return body.result!;
      };
      return { request, client: { close: async () => {} } };
    };
    const [a, b] = [connect(replicas[0]!.url, true), connect(replicas[1]!.url, true)];
    /** A result without the `_meta` every 2026-07-28 result carries (the server's info). */
    const bare = ({ _meta: _m, ...rest }: Record<string, unknown>) => rest;
    const plain = connect(replicas[0]!.url, false);
    try {
      await eventually(async () => ((await a.request("tools/list", {})).tools as Array<{ name: string }>).some((t) => t.name === "hangs"));
      // Quick: a plain result, no task.
      const quick = await a.request("tools/call", { name: "quick", arguments: { text: "one" } });
      expect(quick.resultType).not.toBe("task");
      expect(quick.taskId).toBeUndefined();
      expect(quick.content[0].text).toBe("quick one");
      // Slow: the task, flat; polled on the other replica until it completes with the tool result inlined.
      const created = await a.request("tools/call", { name: "slow", arguments: { text: "two" } });
      expect(created).toMatchObject({ resultType: "task", status: "working", ttlMs: expect.any(Number), pollIntervalMs: expect.any(Number) });
      expect(created).not.toHaveProperty("result");
      expect(Date.parse(created.createdAt)).not.toBeNaN();
      expect((await b.request("tasks/get", { taskId: created.taskId })).status).toBe("working");
      release();
      const done = await eventually(async () => {
        const t = await b.request("tasks/get", { taskId: created.taskId });
        return t.status === "completed" ? t : undefined;
      });
      expect(done).toMatchObject({ resultType: "complete", status: "completed", result: { content: [{ type: "text", text: "slow two" }] } });
      // A tool that failed: completed, with an error result (failed is for JSON-RPC errors).
      const failing = await a.request("tools/call", { name: "fails", arguments: { text: "x" } });
      const failed = await eventually(async () => {
        const t = await a.request("tasks/get", { taskId: failing.taskId });
        return t.status === "completed" ? t : undefined;
      });
      expect(failed!.result.isError).toBe(true);
      // A task that asks later: input_required with its request; tasks/update answers it (an unknown key is ignored).
      const asking = await a.request("tools/call", { name: "asks", arguments: { text: "x" } });
      expect(asking.resultType).toBe("task");
      const waiting = await eventually(async () => {
        const t = await b.request("tasks/get", { taskId: asking.taskId });
        return t.status === "input_required" ? t : undefined;
      });
      const [key, asked] = Object.entries(waiting!.inputRequests as Record<string, { method: string; params: { message: string } }>)[0]!;
      expect(asked).toMatchObject({ method: "elicitation/create", params: { message: "Which colour?" } });
      expect(bare(await b.request("tasks/update", { taskId: asking.taskId, inputResponses: { "never-asked": { action: "accept", content: { answer: "no" } } } }))).toEqual({ resultType: "complete" });
      expect(bare(await b.request("tasks/update", { taskId: asking.taskId, inputResponses: { [key]: { action: "accept", content: { answer: "teal" } } } }))).toEqual({ resultType: "complete" });
      const answered = await eventually(async () => {
        const t = await a.request("tasks/get", { taskId: asking.taskId });
        return t.status === "completed" ? t : undefined;
      });
      expect(answered!.result.content[0].text).toBe("colour teal");
      // Cancel: an empty ack, then cancelled; again on an ended task: the same ack.
      const hanging = await a.request("tools/call", { name: "hangs", arguments: { text: "x" } });
      expect(bare(await b.request("tasks/cancel", { taskId: hanging.taskId }))).toEqual({ resultType: "complete" });
      await eventually(async () => (await a.request("tasks/get", { taskId: hanging.taskId })).status === "cancelled");
      expect(bare(await a.request("tasks/cancel", { taskId: hanging.taskId }))).toEqual({ resultType: "complete" });
      // Unknown task: -32602; a client that did not declare the extension: -32021, and never a task.
      await expect(a.request("tasks/get", { taskId: "no-such-task" })).rejects.toMatchObject({ code: -32602 });
      await expect(plain.request("tasks/get", { taskId: created.taskId })).rejects.toMatchObject({ code: -32021 });
      const undeclared = await plain.request("tools/call", { name: "slow", arguments: { text: "three" } });
      expect(undeclared.resultType).not.toBe("task");
      expect(undeclared.content[0].text).toBe("slow three");
    } finally {
      for (const c of [a, b, plain]) await c.client.close();
      for (const r of replicas) await r.app.close();
    }
  }, 60_000);

  it("serves tools to an authenticated MCP client; refuses a missing key", async () => {
    const Fastify = (await import("fastify")).default;
    const { mcpHttp } = await import("../../bridges/mcp/index.js");
    const { hashApiKey } = await import("../../bridges/a2a/index.js");
    const { StreamableHTTPClientTransport } = await import("@modelcontextprotocol/sdk/client/streamableHttp.js");
    const agentBus = await open({ tenant: "mcphttp", insecureAllowAll: true });
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    const bridgeBus = await open({ tenant: "mcphttp" });
    const keyBus = await open({ tenant: "mcphttp" });
    await eventually(() => keyBus.discover({ online: true }).length === 1);
    const app = Fastify({ forceCloseConnections: true });
    await app.register(mcpHttp, { bus: bridgeBus, apiKeys: [{ name: "ide", sha256: hashApiKey("mcp-key"), bus: keyBus }] });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    try {
      const denied = await fetch(`${url}/mcp`, { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } } }) });
      expect(denied.status).toBe(401);

      // An unknown (ended, another replica's) session is 404, so clients start a new one; no session at all is 400.
      const list = (headers: Record<string, string>) =>
        fetch(`${url}/mcp`, { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream", authorization: "Bearer mcp-key", ...headers }, body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }) });
      expect((await list({ "mcp-session-id": "no-such-session" })).status).toBe(404);
      expect((await list({})).status).toBe(400);

      const client = new Client({ name: "http-test", version: "1.0.0" });
      await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers: { authorization: "Bearer mcp-key" } } }));
      expect((await client.listTools()).tools.map((t) => t.name)).toEqual(["mesh__get_messages", "mesh__reply_message", "echo"]);
      const result = (await client.callTool({ name: "echo", arguments: { text: "over http" } })) as CallToolResult;
      expect(text(result)).toBe("echo: over http");

      // The MCP client as an agent with an inbox: another agent writes, it reads and replies.
      const sender = await open({ tenant: "mcphttp" });
      await grant(sender, "to-ide", { source: sender.id, target: keyBus.id, capabilities: ["inbox"] }, keyBus);
      await grant(sender, "from-ide", { source: keyBus.id, target: sender.id, capabilities: ["inbox"] }, keyBus);
      await eventually(() => keyBus.acl.allows(sender.id, keyBus.id, "inbox") && sender.acl.allows(keyBus.id, sender.id, "inbox"));
      await sender.send(keyBus.id, "please review PR 7", { context: "review-7" });
      const got = (await client.callTool({ name: "mesh__get_messages", arguments: { max: 5 } })) as CallToolResult;
      const messages = (got.structuredContent as { messages: Array<{ from: string; text: string; contextId: string }> }).messages;
      expect(messages).toEqual([expect.objectContaining({ from: sender.id, text: "please review PR 7" })]);
      expect(text((await client.callTool({ name: "mesh__reply_message", arguments: { to: sender.id, text: "LGTM", contextId: "review-7" } })) as CallToolResult)).toMatch(/^sent/);
      const replies = await sender.receive({ waitMs: 2000 });
      expect(replies.map((m) => [m.from, textOf(m.message)])).toEqual([[keyBus.id, "LGTM"]]);
      await client.close();
    } finally {
      await app.close();
    }
  }, 60_000);
});
