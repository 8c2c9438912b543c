import {
  A2A_CONTENT_TYPE,
  AgentCard as AgentCardCodec,
  ListTasksRequest as ListTasksRequestCodec,
  ListTasksResponse as ListTasksResponseCodec,
  ListTaskPushNotificationConfigsResponse as PushConfigListCodec,
  SendMessageRequest as SendMessageRequestCodec,
  SendMessageResponse as SendMessageResponseCodec,
  StreamResponse as StreamResponseCodec,
  Task as TaskCodec,
  TaskPushNotificationConfig as PushConfigCodec,
  type Message as SdkMessage,
  type SendMessageRequest,
  type Task as SdkTask,
} from "@a2a-js/sdk";
import { A2AError, RequestMalformedError, restStatusFor, toRestErrorBody } from "@a2a-js/sdk/errors";
import { ServerCallContext, validateVersion } from "@a2a-js/sdk/server";
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteShorthandOptions } from "fastify";
import type { A2ARoute, OpenRequest } from "./routes.js";
import { LIST_STATUSES, MAX_DEPTH, nestedDeeperThan, requestedVersion, sdkCard } from "./routes.js";
import { streamSse, type SseFormat } from "./sse.js";

/** Path params of the HTTP+JSON routes. */
interface Params {
  agent?: string;
  /** `<id>`, `<id>:cancel` or `<id>:subscribe`. */
  task?: string;
  config?: string;
}

type Request = FastifyRequest<{ Params: Params; Querystring: Record<string, string | undefined> }>;

/** What a route's action gives: a JSON body with its status, or a stream of StreamResponses. */
type Outcome = { status: number; body?: unknown } | { stream: AsyncIterable<unknown> };

/** An error as the HTTP+JSON binding answers it: its status and the SDK's error body. */
function refusal(err: unknown): { status: number; body: unknown } {
  const status = restStatusFor(err);
  return { status, body: toRestErrorBody(err, status) };
}

const FORMAT: SseFormat = {
  event: (value) => StreamResponseCodec.toJSON(value as never),
  refuse: (reply, err) => {
    const { status, body } = refusal(err);
    return reply.code(status).type(A2A_CONTENT_TYPE).send(body);
  },
  error: (err) => refusal(err).body,
};

/** The request body as JSON (`{}` when there is none): malformed, or nested too deep, is RequestMalformedError. */
function bodyOf(req: Request): Record<string, unknown> {
  const raw = req.body;
  if (raw === undefined || raw === null || raw === "") return {};
  let body: unknown;
  try {
    body = JSON.parse(raw as string);
  } catch {
    throw new RequestMalformedError("malformed JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new RequestMalformedError("the request body must be a JSON object");
  if (nestedDeeperThan(body, MAX_DEPTH)) throw new RequestMalformedError(`the request is nested deeper than ${MAX_DEPTH} levels`);
  return body as Record<string, unknown>;
}

/** A SendMessage request (the handler checks the message). */
const sendRequest = (req: Request): SendMessageRequest => SendMessageRequestCodec.fromJSON(bodyOf(req));

/** A ListTasks response with every field, also those at their defaults (an empty page is `{tasks: [], …}`, not `{}`). */
const listResponse = (response: Parameters<typeof ListTasksResponseCodec.toJSON>[0]): unknown => ({ tasks: [], nextPageToken: "", pageSize: 0, totalSize: 0, ...(ListTasksResponseCodec.toJSON(response) as object) });

/** A SendMessage result as the binding's `SendMessageResponse` (`{task}` or `{message}`). */
function sendResponse(result: SdkMessage | SdkTask): unknown {
  const payload = "messageId" in result ? { $case: "message" as const, value: result } : { $case: "task" as const, value: result };
  return SendMessageResponseCodec.toJSON({ payload } as never);
}

/** A non-negative integer query parameter, or RequestMalformedError. */
function countParam(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^\d{1,9}$/.test(value)) throw new RequestMalformedError(`${name} must be a non-negative integer`);
  return Number(value);
}

/** A ListTasks request from the query string (`status` by name; unknown names refused, not taken as a filter). */
function listRequest(req: Request) {
  const q = req.query;
  if (q.status !== undefined && q.status !== "" && !LIST_STATUSES.has(q.status)) throw new RequestMalformedError(`status ${JSON.stringify(q.status)} is not a task state`);
  if (q.includeArtifacts !== undefined && !["true", "false", ""].includes(q.includeArtifacts)) throw new RequestMalformedError("includeArtifacts must be true or false");
  return ListTasksRequestCodec.fromJSON({
    contextId: q.contextId ?? "",
    status: q.status || undefined,
    pageSize: countParam("pageSize", q.pageSize),
    pageToken: q.pageToken ?? "",
    historyLength: countParam("historyLength", q.historyLength),
    statusTimestampAfter: q.statusTimestampAfter || undefined,
    includeArtifacts: q.includeArtifacts === "true",
  });
}

/** `<id>:<verb>` of a task path segment; the verb is empty for a bare id. */
function taskPath(segment: string | undefined): { id: string; verb: string } {
  const s = segment ?? "";
  const colon = s.lastIndexOf(":");
  return colon < 0 ? { id: s, verb: "" } : { id: s.slice(0, colon), verb: s.slice(colon + 1) };
}

/**
 * The HTTP+JSON (REST) binding of A2A v1.0 on the bridge: the gateway's
 * methods under `/a2a/rest`, each agent's under `/a2a/<agent>/rest`
 * (`POST message:send`, `POST message:stream`, `GET tasks`,
 * `GET tasks/<id>`, `POST tasks/<id>:cancel`, `GET|POST
 * tasks/<id>:subscribe`, the push config resources under
 * `tasks/<id>/pushNotificationConfigs`, `GET extendedAgentCard`). The same
 * request handler as JSON-RPC serves them; errors are the SDK's REST error
 * bodies with their HTTP status; streams are SSE with each event's cursor
 * as its `id`.
 */
export function restRoutes(app: FastifyInstance, open: OpenRequest, route: RouteShorthandOptions, keepAliveMs: number): void {
  const serve = async (req: Request, reply: FastifyReply, method: string, act: (r: A2ARoute) => Promise<Outcome>): Promise<unknown> => {
    const agent = req.params.agent;
    const opened = open(req, reply, agent, method, "HTTP+JSON");
    if (!opened) return reply.code(404).type(A2A_CONTENT_TYPE).send(toRestErrorBody(new Error(`no agent named ${agent}`), 404));
    const { op } = opened;
    try {
      const context = new ServerCallContext({ requestedVersion: requestedVersion(req) });
      validateVersion(context.requestedVersion, sdkCard(opened.card), "HTTP+JSON");
      const outcome = await act(opened);
      if ("stream" in outcome) {
        const streamed = await streamSse(reply, outcome.stream, FORMAT, keepAliveMs, { traceresponse: op.trace.traceparent }, opened.gone);
        op.end();
        return streamed;
      }
      op.end();
      if (outcome.body === undefined) return reply.code(outcome.status).send();
      return reply.code(outcome.status).type(A2A_CONTENT_TYPE).send(outcome.body);
    } catch (err) {
      const { status, body } = refusal(err);
      op.span?.setAttribute("http.response.status_code", status);
      op.end(err instanceof A2AError ? undefined : err);
      return reply.code(status).type(A2A_CONTENT_TYPE).send(body);
    }
  };

  for (const prefix of ["/a2a/rest", "/a2a/:agent/rest"]) {
    app.post<{ Params: Params }>(`${prefix}/message::send`, route, (req, reply) =>
      serve(req as Request, reply, "SendMessage", async ({ handler }) => ({ status: 200, body: sendResponse(await handler.sendMessage(sendRequest(req as Request))) })),
    );
    app.post<{ Params: Params }>(`${prefix}/message::stream`, route, (req, reply) =>
      serve(req as Request, reply, "SendStreamingMessage", async ({ handler }) => ({ stream: handler.sendMessageStream(sendRequest(req as Request)) })),
    );
    app.get<{ Params: Params }>(`${prefix}/tasks`, route, (req, reply) =>
      serve(req as Request, reply, "ListTasks", async ({ handler }) => ({ status: 200, body: listResponse(await handler.listTasks(listRequest(req as Request))) })),
    );
    // GET tasks/<id> (GetTask), GET tasks/<id>:subscribe; POST tasks/<id>:cancel, POST tasks/<id>:subscribe.
    const task = (req: Request, reply: FastifyReply, post: boolean) => {
      const { id, verb } = taskPath(req.params.task);
      if (verb === "subscribe") return serve(req, reply, "SubscribeToTask", async ({ handler }) => ({ stream: handler.resubscribe({ id, tenant: "" }) }));
      if (post && verb === "cancel") {
        return serve(req, reply, "CancelTask", async ({ handler }) => ({ status: 200, body: TaskCodec.toJSON(await handler.cancelTask({ id, tenant: "", metadata: bodyOf(req).metadata as never })) }));
      }
      if (!post && verb === "") {
        return serve(req, reply, "GetTask", async ({ handler }) => ({
          status: 200,
          body: TaskCodec.toJSON(await handler.getTask({ id, tenant: "", historyLength: countParam("historyLength", req.query.historyLength) })),
        }));
      }
      return reply.code(404).type(A2A_CONTENT_TYPE).send(toRestErrorBody(new Error(`no method ${req.method} tasks/{id}${verb ? `:${verb}` : ""}`), 404));
    };
    app.get<{ Params: Params }>(`${prefix}/tasks/:task`, route, (req, reply) => task(req as Request, reply, false));
    app.post<{ Params: Params }>(`${prefix}/tasks/:task`, route, (req, reply) => task(req as Request, reply, true));
    const configs = `${prefix}/tasks/:task/pushNotificationConfigs`;
    app.post<{ Params: Params }>(configs, route, (req, reply) =>
      serve(req as Request, reply, "CreateTaskPushNotificationConfig", async ({ handler }) => ({
        status: 201,
        body: PushConfigCodec.toJSON(await handler.createTaskPushNotificationConfig(PushConfigCodec.fromJSON({ ...bodyOf(req as Request), taskId: req.params.task }))),
      })),
    );
    app.get<{ Params: Params }>(configs, route, (req, reply) =>
      serve(req as Request, reply, "ListTaskPushNotificationConfigs", async ({ handler }) => ({
        status: 200,
        body: PushConfigListCodec.toJSON(await handler.listTaskPushNotificationConfigs({ taskId: req.params.task ?? "", pageSize: 0, pageToken: "", tenant: "" })),
      })),
    );
    app.get<{ Params: Params }>(`${configs}/:config`, route, (req, reply) =>
      serve(req as Request, reply, "GetTaskPushNotificationConfig", async ({ handler }) => ({
        status: 200,
        body: PushConfigCodec.toJSON(await handler.getTaskPushNotificationConfig({ taskId: req.params.task ?? "", id: req.params.config ?? "", tenant: "" })),
      })),
    );
    app.delete<{ Params: Params }>(`${configs}/:config`, route, (req, reply) =>
      serve(req as Request, reply, "DeleteTaskPushNotificationConfig", async ({ handler }) => {
        await handler.deleteTaskPushNotificationConfig({ taskId: req.params.task ?? "", id: req.params.config ?? "", tenant: "" });
        return { status: 204 };
      }),
    );
    app.get<{ Params: Params }>(`${prefix}/extendedAgentCard`, route, (req, reply) =>
      serve(req as Request, reply, "GetExtendedAgentCard", async ({ handler }) => ({ status: 200, body: AgentCardCodec.toJSON(await handler.getAuthenticatedExtendedAgentCard()) })),
    );
  }
}
