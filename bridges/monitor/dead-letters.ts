/**
 * The monitor's dead-letter routes: the tenant's dead letters listed with
 * a preview of their input, submitted again as new tasks, or removed
 * (`bus.deadLetters`). Every route acts as the request's caller.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AgentBusError, isAgentBusError, type Bus, type DeadLetter, type Task } from "../../core/internal.js";
import { messagePreview } from "./tasks.js";

/** What the routes of a console file need from the monitor. */
export interface MonitorRouteContext {
  /** The connection a request acts as; answers 401 and returns undefined without one. */
  callerOf(req: FastifyRequest, reply: FastifyReply): Bus | undefined;
}

/** A dead letter as `GET /v1/dead-letters` lists it. */
export interface DeadLetterView {
  /** Its sequence in the dead-letter stream: the `:sequence` of the other routes. */
  sequence: number;
  /** The capability it was queued for (`inbox`: a direct message). */
  capability: string;
  /** The task it belonged to. */
  taskId?: string;
  /** Why it was dead-lettered. */
  reason: string;
  /** Deliveries before it was dead-lettered (0: not recorded). */
  deliveries: number;
  /** When it was dead-lettered (ISO 8601). */
  time: string;
  /**
   * Its input message in at most 200 characters: text parts joined by
   * spaces, data parts as compact JSON, other parts named in brackets
   * (`[file name]`, `[12345 bytes]` for a part kept in the object store,
   * `[encrypted]` for one the caller may not open); empty when the input
   * cannot be read (see `DeadLetter.input`).
   */
  input: string;
  /** Who queued it, when known (see `DeadLetter.submitter`). */
  submitter?: string;
}

/** Most dead letters one listing shows. */
const MAX_LISTED = 500;
/** A dead letter's sequence as a path gives it. */
const SEQUENCE = /^[1-9][0-9]{0,15}$/;
/** Why an input cannot be submitted again: the dead letter is there, but this identity cannot read what it holds. */
const UNREADABLE = new Set(["NOT_RECIPIENT", "BAD_SIGNATURE", "UNSIGNED", "EXPIRED"]);

/** A dead letter as the listing shows it. */
export function deadLetterView(d: DeadLetter): DeadLetterView {
  return {
    sequence: d.sequence,
    capability: d.capability,
    ...(d.taskId !== undefined && { taskId: d.taskId }),
    reason: d.reason,
    deliveries: d.deliveries,
    time: d.time.toISOString(),
    input: messagePreview(d.input),
    ...(d.submitter !== undefined && { submitter: d.submitter }),
  };
}

/** The `:sequence` of a path; `INVALID_INPUT` for anything but a positive integer. */
function sequenceOf(v: string): number {
  if (!SEQUENCE.test(v) || !Number.isSafeInteger(Number(v))) throw new AgentBusError("INVALID_INPUT", "a dead letter's sequence is a positive integer");
  return Number(v);
}

/** Answers 404 `NOT_FOUND` for a dead letter that is not there. */
const notFound = (reply: FastifyReply, sequence: number) => reply.code(404).send({ code: "NOT_FOUND", message: `no dead letter ${sequence}` });

/**
 * Registers the dead-letter routes on the monitor's `app` (whose error
 * handler answers what they throw as `{code, message}`):
 *
 * - `GET /v1/dead-letters` — `{deadLetters: DeadLetterView[]}`, newest
 *   first, at most 500 (`?capability`: that capability's only)
 * - `POST /v1/dead-letters/:sequence/requeue` — 201 `{task}`: the work
 *   submitted again as a new task of the caller (same capability and
 *   input, `metadata.retryOf` = the dead task's id), and the dead letter
 *   removed; 409 with the code when its input cannot be read by the
 *   caller's identity (`NOT_RECIPIENT` for one encrypted for others,
 *   `BAD_SIGNATURE` or `UNSIGNED` for a copy that does not verify), 400
 *   `INVALID_INPUT` for a direct message
 * - `DELETE /v1/dead-letters/:sequence` — 204: the dead letter removed
 *
 * An unknown sequence is 404 `NOT_FOUND`, a malformed one 400
 * `INVALID_INPUT`. Behind an API key or a bearer token, only the dead
 * letters of tasks submitted with that caller's name exist; in open mode
 * every dead letter of the monitor's tenant. Reading and removing them is
 * the server's to allow (bridges and admins under the role permissions:
 * 403 `DENIED` otherwise). On a federated bus, the dead letters of the
 * caller's connection's region.
 */
export function deadLetterRoutes(app: FastifyInstance, { callerOf }: MonitorRouteContext): void {
  app.get<{ Querystring: { capability?: string } }>("/v1/dead-letters", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const list = await on.deadLetters.list({ capability: req.query.capability || undefined, limit: MAX_LISTED, caller: req.caller?.name });
    return { deadLetters: list.map(deadLetterView) };
  });

  app.post<{ Params: { sequence: string } }>("/v1/dead-letters/:sequence/requeue", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const sequence = sequenceOf(req.params.sequence);
    let task: Task;
    try {
      const handle = await on.deadLetters.requeue(sequence, { caller: req.caller?.name });
      task = handle.submitted ?? (await handle.get());
    } catch (err) {
      if (isAgentBusError(err, "DEAD_LETTER_NOT_FOUND")) return notFound(reply, sequence);
      if (isAgentBusError(err) && UNREADABLE.has(err.code)) return reply.code(409).send({ code: err.code, message: err.message });
      throw err;
    }
    return reply.code(201).send({ task });
  });

  app.delete<{ Params: { sequence: string } }>("/v1/dead-letters/:sequence", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const sequence = sequenceOf(req.params.sequence);
    if (!(await on.deadLetters.discard(sequence, { caller: req.caller?.name }))) return notFound(reply, sequence);
    return reply.code(204).send();
  });
}
