import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AgentBusError, isAgentBusError, SpanAttr, SpanKind, traced, traceFromHeaders, type AgentInfo, type Bus, type ErrorCode, type Input, type ScheduleSpec } from "../../core/internal.js";
import { API_KEY_HEADER, edgeFor, type BridgeEdgeOptions } from "../http/index.js";
import { EventReader, type Feed } from "../events/index.js";
import { relaySse, type SseSource } from "./sse.js";
import { MonitorStats } from "./stats.js";
import { listOf, parseInteger, parseStates, TASK_ID, taskRoutes } from "./tasks.js";
import { deadLetterRoutes } from "./dead-letters.js";
import { auditRoutes } from "./audit.js";

/**
 * Options of {@link monitor}. As for the A2A bridge: behind the app's HTTP
 * edge (the gateway's) none of `open`, `apiKeys`, `oidc`; without one,
 * exactly one of `open` and (`apiKeys`, `oidc`), and the monitor runs behind
 * its own edge.
 */
export interface MonitorOptions extends BridgeEdgeOptions {
  /** The monitor's own connection: every request in open mode, and one more identity to verify events with. */
  bus: Bus;
  /** Interval of SSE keep-alive comments, ms (default 15 000). */
  keepAliveMs?: number;
  /** Folder of the web page's files (default: `bridges/monitor/public` of this package). */
  publicDir?: string;
}

/** Error codes of the monitor's JSON errors: the bus's, plus `UNAUTHORIZED`, `NOT_FOUND` (no such route or file) and `INTERNAL`. */
export type MonitorErrorCode = ErrorCode | "UNAUTHORIZED" | "NOT_FOUND" | "INTERNAL";

/** The body of every error answer: `{code, message}`. */
export interface MonitorError {
  code: MonitorErrorCode;
  message: string;
}

/** HTTP status of each bus error code the monitor may meet (others: 500). */
const STATUS: Partial<Record<MonitorErrorCode, number>> = {
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  INVALID_INPUT: 400,
  DEPTH_EXCEEDED: 400,
  DENIED: 403,
  UNKNOWN_SENDER: 403,
  REVOKED: 403,
  TASK_NOT_FOUND: 404,
  SCHEDULE_NOT_FOUND: 404,
  SERVER_TOO_OLD: 501,
  NO_RESPONDERS: 404,
  NOT_CANCELABLE: 409,
  TASK_FINISHED: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNAVAILABLE: 503,
  CLOSED: 503,
  TIMEOUT: 504,
};

/** Any error as the monitor's `{code, message}` body and its HTTP status. */
function errorBody(err: unknown): { status: number; body: MonitorError } {
  if (isAgentBusError(err)) return { status: STATUS[err.code] ?? 500, body: { code: err.code, message: err.message } };
  const e = err as FastifyError;
  // fastify's own refusals: schema validation, malformed JSON, body too large
  if (typeof e?.statusCode === "number" && e.statusCode < 500) {
    return { status: e.statusCode, body: { code: e.statusCode === 413 ? "PAYLOAD_TOO_LARGE" : "INVALID_INPUT", message: e.message } };
  }
  return { status: 500, body: { code: "INTERNAL", message: "internal error" } };
}

/** An agent as `/v1/agents` lists it. */
function agentView(a: AgentInfo) {
  return {
    id: a.id,
    name: a.name,
    description: a.card.description,
    version: a.card.version,
    capabilities: a.capabilities,
    tags: a.tags,
    online: a.online,
    instances: a.instances,
    regions: a.regions,
    lastSeen: a.lastSeen?.toISOString(),
    card: a.card,
    inFlight: a.inFlight,
  };
}

/** The content type of each kind of page file served; files of other kinds are not. */
const PAGE_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

/** A page file as served: its bytes and content type. */
interface PageFile {
  body: Buffer;
  type: string;
}

/**
 * The page's files, read once: every `.html`, `.js`, `.css` and `.svg`
 * file directly in the folder (subfolders are not served), next to this
 * module or in the source tree when running from `dist/`.
 */
function readPage(dir?: string): Map<string, PageFile> {
  const here = dirname(fileURLToPath(import.meta.url));
  const folder = dir ?? [join(here, "public"), join(here, "../../../bridges/monitor/public")].find((d) => existsSync(join(d, "index.html")));
  if (!folder) throw new Error(`monitor: the web page's files are missing next to ${here}; pass publicDir`);
  const files = new Map<string, PageFile>();
  for (const name of readdirSync(folder)) {
    const type = PAGE_TYPES[extname(name)];
    if (type && statSync(join(folder, name)).isFile()) files.set(name, { body: readFileSync(join(folder, name)), type });
  }
  if (!files.has("index.html")) throw new Error(`monitor: no index.html in ${folder}`);
  return files;
}

/** The chart library's files the page loads from `vendor/`, read once from the installed `uplot` package. */
function readVendor(): Map<string, PageFile> {
  const require = createRequire(import.meta.url);
  const files = new Map<string, PageFile>();
  for (const name of ["uPlot.esm.js", "uPlot.min.css"]) {
    files.set(name, { body: readFileSync(require.resolve(`uplot/dist/${name}`)), type: PAGE_TYPES[extname(name)]! });
  }
  return files;
}

/**
 * The events of `feed` whose task `on` (with `caller`) may see: the tasks it
 * submitted, serves or is granted `task.<cap>` for. One snapshot read per
 * task, remembered for the stream (at most 10 000 tasks).
 */
function visibleOnly(feed: Feed, on: Bus, caller: string | undefined): Feed {
  const known = new Map<string, Promise<boolean>>();
  const visible = (taskId: string): Promise<boolean> => {
    let v = known.get(taskId);
    if (!v) {
      v = on.task(taskId, { caller }).then(
        () => true,
        (err: unknown) => {
          if (isAgentBusError(err, "TASK_NOT_FOUND")) return false;
          throw err;
        },
      );
      if (known.size >= 10_000) known.delete(known.keys().next().value!);
      known.set(taskId, v);
    }
    return v;
  };
  return {
    stop: feed.stop,
    events: (async function* () {
      for await (const e of feed.events) if (await visible(e.taskId)) yield e;
    })(),
  };
}

/** `POST /v1/send` body. */
interface SendBody {
  capability: string;
  /** Plain text: a text part. */
  text?: string;
  /** Any JSON input instead (a data part, parts, or a whole A2A message). */
  input?: unknown;
  contextId?: string;
  /** Continues a task waiting for input. */
  taskId?: string;
}

/** Checks a `POST /v1/send` body by hand (fastify's validator would coerce a number into text). */
function parseSend(body: unknown): SendBody {
  const b = body as Record<string, unknown> | null;
  if (typeof b !== "object" || b === null || Array.isArray(b)) throw new AgentBusError("INVALID_INPUT", "the body must be a JSON object");
  const unknown = Object.keys(b).filter((k) => !["capability", "text", "input", "contextId", "taskId"].includes(k));
  if (unknown.length > 0) throw new AgentBusError("INVALID_INPUT", `unknown field ${unknown[0]}`);
  for (const field of ["capability", "text", "contextId", "taskId"] as const) {
    if (b[field] !== undefined && typeof b[field] !== "string") throw new AgentBusError("INVALID_INPUT", `${field} must be a string`);
  }
  if (!b.capability) throw new AgentBusError("INVALID_INPUT", "capability is required");
  if ((b.text === undefined) === (b.input === undefined)) throw new AgentBusError("INVALID_INPUT", "give either text or input");
  return b as unknown as SendBody;
}

/** The fields of a `POST /v1/schedules` body: a {@link ScheduleSpec} with the input as `text` or `input`. */
const SCHEDULE_FIELDS = ["id", "capability", "text", "input", "cron", "everyMs", "timeZone", "ttlMs", "priority"];

/** Checks a `POST /v1/schedules` body's shape; the schedule itself is checked by `bus.schedules.create`. */
function parseSchedule(body: unknown): ScheduleSpec {
  const b = body as Record<string, unknown> | null;
  if (typeof b !== "object" || b === null || Array.isArray(b)) throw new AgentBusError("INVALID_INPUT", "the body must be a JSON object");
  const unknown = Object.keys(b).filter((k) => !SCHEDULE_FIELDS.includes(k));
  if (unknown.length > 0) throw new AgentBusError("INVALID_INPUT", `unknown field ${unknown[0]}`);
  if ((b.text === undefined) === (b.input === undefined)) throw new AgentBusError("INVALID_INPUT", "give either text or input");
  if (b.text !== undefined && typeof b.text !== "string") throw new AgentBusError("INVALID_INPUT", "text must be a string");
  const { text, input, ...rest } = b;
  return { ...rest, input: (text ?? input) as ScheduleSpec["input"] } as ScheduleSpec;
}

/**
 * The monitor as a fastify plugin: what is on the bus, for people and
 * dashboards. REST and SSE under `/v1`, a small web page at `/monitor/`.
 *
 * - `GET /v1/agents` — cards, liveness and load (`inFlight`: handlers running, summed over live instances as of their last heartbeat) (`?capability`, `?name`, `?tag`, `?online=true|false`)
 * - `GET /v1/tasks` — the caller's task snapshots, newest first, each with a `view` (`?state` (comma list), `?capability`, `?agent`, `?parent`, `?q`, `?contextId`, `?pageSize`, `?pageToken`; see {@link taskRoutes})
 * - `GET /v1/tasks/:id` — `{task, events}`: the snapshot (with its `view`) and every stored event
 * - `GET /v1/tasks/:id/tree` — `{root, nodes}`: the task and its sub-tasks, depth first, with their events
 * - `POST /v1/tasks/:id/cancel` — `{task}`: cancels it; `POST /v1/tasks/:id/retry` — 201 `{task}`: submits its input again as a new task (`metadata.retryOf`)
 * - `GET /v1/stats` — `{bucketMs, now, capabilities}`: per capability, 10 s points over the last `?minutes` (1..1440, default 60) of tasks ended, their latency percentiles, queued and running work and dead letters (see `TenantStats` in `stats.ts`)
 * - `GET /v1/events` — SSE: task events live, of the tasks the caller may see (`?capability`, `?task`, `?state`, comma lists; `?from` = a stream sequence to replay from)
 * - `POST /v1/send` — `{capability, text | input, contextId?, taskId?}`: submits a durable task and streams it as SSE (`{task}` first, then its events, until it is final)
 * - `GET /v1/topology` — the regions with the agents and instances live in each and, federated, whether this region hears from each other one (`bus.topology()`)
 * - `GET /v1/work` — queued work by capability and priority with the workers pulling it (`workers`: their open pull requests, see `CapabilityWork.workers`), delayed tasks, every schedule with its next run, and `me` (the identity requests act as)
 * - `POST /v1/schedules` — creates (or replaces) a schedule of the identity requests act as; `POST /v1/schedules/:id/pause`, `…/resume`; `DELETE /v1/schedules/:id`
 * - `GET /v1/dead-letters` — the dead letters the caller may see, newest first, with input previews (`?capability`); `POST /v1/dead-letters/:sequence/requeue` — 201 `{task}`: submitted again as a new task; `DELETE /v1/dead-letters/:sequence` — 204 (see {@link deadLetterRoutes})
 * - `GET /v1/audit` — the audit trail, newest first: refusals with their codes, revocations, MCP tool calls (`?kind`, `?limit`)
 *
 * Task routes are scoped to the caller: behind an API key or a bearer
 * token, the tasks submitted with that caller's name (another caller's task
 * is 404 `TASK_NOT_FOUND`, as an unknown one, even on the same bus
 * identity); in open mode, the monitor's own identity: the tasks it
 * submitted, served, or is granted in the ACL (an operator who wants every
 * task of the tenant here grants that identity `task.>` on `*`).
 *
 * `/v1/stats` is not scoped to the caller: it shows aggregates of the
 * caller's whole tenant (counts of tasks ended and their latencies per
 * capability, queue depths, dead-letter counts; no task content, ids or
 * submitters), collected by this monitor from its start (and the events
 * stored in the hour before) for each tenant among its connections, and
 * stopped when the app closes.
 *
 * Each request acts as the bus connection of its API key (`X-API-Key` or
 * `Authorization: Bearer`), so it sees that key's tenant; in open mode, as
 * `bus`. Errors are `{code, message}` with an HTTP status (401
 * `UNAUTHORIZED`, 400 `INVALID_INPUT`, 404 `TASK_NOT_FOUND`, ...). Events
 * are read from the events stream as operator data: see {@link EventReader}
 * for what `verified` means. The page itself holds no data and is served
 * without a key; it asks for one when the API answers 401: every `.html`,
 * `.js`, `.css` and `.svg` file of the page's folder at `/monitor/<file>`
 * (read once at start), and the chart library at `/monitor/vendor/uPlot.esm.js`
 * and `/monitor/vendor/uPlot.min.css` (the installed `uplot` package). Its URLs are
 * relative, so the plugin can be registered under a fastify `prefix`.
 * Open streams end when the server closes.
 */
export async function monitor(app: FastifyInstance, options: MonitorOptions): Promise<void> {
  const { bus } = options;
  // Authentication, Host and Origin: the app's HTTP edge, which attaches `request.caller`.
  const edge = await edgeFor(app, options, "monitor");
  if (edge.open) bus.log.warn("INSECURE: monitor in open mode: no authentication, every caller sees this tenant and sends as this monitor's identity. Local use only.");
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  const reader = new EventReader(edge.auth.buses());
  const page = readPage(options.publicDir);
  const vendor = readVendor();
  // Charts of each tenant served, collected from now (and the last hour's events) until the app closes.
  const stats = await MonitorStats.start([...new Set([bus, ...edge.auth.buses()])]);
  app.addHook("onClose", () => stats.stop());

  /** The connection a request acts as (the edge's caller); answers 401 and returns undefined without one. */
  const callerOf = (req: FastifyRequest, reply: FastifyReply): Bus | undefined => {
    if (!req.caller) {
      void reply.code(401).header("WWW-Authenticate", `ApiKey header="${API_KEY_HEADER}"`).send({ code: "UNAUTHORIZED", message: "missing or invalid API key" } satisfies MonitorError);
    }
    return req.caller?.bus;
  };

  // Open streams end when the server closes, so close() does not wait on them.
  const streams = new Set<SseSource>();
  app.addHook("preClose", async () => {
    for (const s of streams) s.stop();
  });
  const stream = async (reply: FastifyReply, source: SseSource) => {
    streams.add(source);
    try {
      await relaySse(reply, source, keepAliveMs, (err) => errorBody(err).body);
    } finally {
      streams.delete(source);
    }
  };

  app.setErrorHandler((err, req, reply) => {
    const { status, body } = errorBody(err);
    if (status >= 500) req.log.error({ err }, "monitor request failed");
    return reply.code(status).send(body);
  });

  app.get<{ Querystring: { capability?: string; name?: string; tag?: string; online?: string } }>("/v1/agents", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const { capability, name, tag, online } = req.query;
    if (online !== undefined && online !== "true" && online !== "false") throw new AgentBusError("INVALID_INPUT", "online must be true or false");
    const agents = on
      .discover({ capability: capability || undefined, name: name || undefined, tag: tag || undefined, online: online === undefined ? undefined : online === "true" })
      .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    return { agents: agents.map(agentView) };
  });

  taskRoutes(app, { callerOf, reader });
  deadLetterRoutes(app, { callerOf });
  auditRoutes(app, { callerOf });

  app.get<{ Querystring: { minutes?: string } }>("/v1/stats", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    return stats.read(on, parseInteger(req.query.minutes, "minutes", 1, 1440) ?? 60);
  });

  app.get("/v1/topology", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    return on.topology();
  });

  app.get("/v1/work", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    // Queued work by capability and priority, delayed tasks, and (nats-server 2.14+) every schedule with its next run.
    const [workload, schedules] = await Promise.all([on.workload({ workers: true }), on.server.cron ? on.schedules.list({ creator: "*" }) : Promise.resolve(undefined)]);
    return { ...workload, ...(schedules && { schedules }), me: on.id };
  });

  // Schedules of the identity the request acts as (another's is 404 SCHEDULE_NOT_FOUND).
  app.post("/v1/schedules", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    return reply.code(201).send({ schedule: await on.schedules.create(parseSchedule(req.body)) });
  });
  for (const action of ["pause", "resume"] as const) {
    app.post<{ Params: { id: string } }>(`/v1/schedules/:id/${action}`, async (req, reply) => {
      const on = callerOf(req, reply);
      if (!on) return reply;
      return { schedule: await on.schedules[action](req.params.id) };
    });
  }
  app.delete<{ Params: { id: string } }>("/v1/schedules/:id", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    if (!(await on.schedules.delete(req.params.id))) throw new AgentBusError("SCHEDULE_NOT_FOUND", `schedule ${req.params.id} not found`);
    return reply.code(204).send();
  });

  app.get<{ Querystring: { capability?: string; task?: string; state?: string; from?: string } }>("/v1/events", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const { capability, task, state, from } = req.query;
    // Only events of tasks the caller may see; a task named in `?task` may not exist yet (its
    // events are followed once it does), so another caller's is the same empty stream as an unknown one.
    const caller = req.caller?.name;
    const feed = visibleOnly(await reader.feed(on, {
      capabilities: listOf(capability),
      states: parseStates(state),
      task: task || undefined,
      from: parseInteger(from, "from", 1, Number.MAX_SAFE_INTEGER),
    }), on, caller);
    return stream(reply, feed);
  });

  app.post("/v1/send", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const { capability, text, input, contextId, taskId } = parseSend(req.body);
    // A SERVER span continuing the request's `traceparent`: the task, its work item and the agent continue it.
    const op = traced("POST /v1/send", SpanKind.SERVER, traceFromHeaders(req.headers), {
      "http.request.method": "POST",
      "http.route": "/v1/send",
      [SpanAttr.capability]: capability,
      [SpanAttr.tenant]: on.subjects.tenant,
    });
    reply.raw.setHeader("traceresponse", op.trace.traceparent);
    try {
      if (on.discover({ capability }).length === 0) throw new AgentBusError("NO_RESPONDERS", `no agent offers capability ${capability}`);
      // A continued task: follow it from after what it has already stored.
      const caller = req.caller?.name;
      const from = taskId && TASK_ID.test(taskId) ? ((await (await on.taskHandle(taskId, { caller })).lastSequence()) ?? 0) + 1 : undefined;
      const handle = await on.submit(capability, (text ?? input) as Input, { taskId, contextId, trace: op.trace, caller });
      op.span?.setAttribute(SpanAttr.task, handle.id);
      const task = handle.submitted ?? (await handle.get());
      const feed = await reader.follow(on, handle.id, capability, from);
      const events = (async function* () {
        yield { task };
        yield* feed.events;
      })();
      await stream(reply, { events, stop: feed.stop });
      op.end();
    } catch (err) {
      op.end(err);
      throw err;
    }
  });

  // The web page: the files read at start, no directory reads per request.
  const sendFile = (reply: FastifyReply, file: PageFile) =>
    reply
      .type(file.type)
      .header("Cache-Control", "no-cache")
      .header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
      .header("X-Content-Type-Options", "nosniff")
      .send(file.body);
  const notFound = (reply: FastifyReply, file: string) => reply.code(404).send({ code: "NOT_FOUND", message: `no file ${file}` } satisfies MonitorError);
  // The page holds no data: served without a key.
  const publicRoute = { config: { edge: { public: true } } };
  app.get("/monitor/", publicRoute, (req, reply) => {
    // Relative URLs in the page need the trailing slash (also under a prefix).
    if (!req.url.split("?", 1)[0]!.endsWith("/")) return reply.redirect("monitor/");
    return sendFile(reply, page.get("index.html")!);
  });
  if (!app.hasRoute({ method: "GET", url: `${app.prefix}/monitor` })) app.get("/monitor", publicRoute, (_req, reply) => reply.redirect("monitor/"));
  app.get<{ Params: { file: string } }>("/monitor/:file", publicRoute, (req, reply) => {
    const { file } = req.params;
    const found = page.get(file);
    return found ? sendFile(reply, found) : notFound(reply, file);
  });
  app.get<{ Params: { file: string } }>("/monitor/vendor/:file", publicRoute, (req, reply) => {
    const { file } = req.params;
    const found = vendor.get(file);
    return found ? sendFile(reply, found) : notFound(reply, `vendor/${file}`);
  });
}
