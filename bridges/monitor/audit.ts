/**
 * The monitor's audit route: the newest records of the tenant's audit
 * stream (`MESH_<T>_AUDIT`), each verified (see `verifyAuditRecord`).
 */
import { jetstream } from "@nats-io/jetstream";
import type { FastifyInstance } from "fastify";
import { AgentBusError, readNewest, verifyAuditRecord, type Bus, type StreamRecord } from "../../core/internal.js";
import type { MonitorRouteContext } from "./dead-letters.js";

/** One audit record as `GET /v1/audit` lists it. */
export interface AuditView {
  /** Its sequence in the audit stream. */
  sequence: number;
  /** When the stream stored it (ISO 8601). */
  time: string;
  /** What it records: a refusal's code in lower case (`denied`, `bad_signature`, …), `revoked`, `rotated`, `mcp_call`, … */
  kind: string;
  /** The identity the record is about (a refused sender), when it names one. */
  from?: string;
  /** A refusal's error code. */
  code?: string;
  /** Why: the record's `reason` (or `message`). */
  message?: string;
  /**
   * Whether the record's signature verified, by the identity it names as
   * its writer (`by`), with the kind of its subject. A record that does
   * not is not evidence of anything.
   */
  verified: boolean;
  /** The whole stored record. */
  record: Record<string, unknown>;
}

/** Records one listing shows unless asked for fewer or more. */
const DEFAULT_LIMIT = 100;
/** Most records one listing shows. */
const MAX_LIMIT = 1000;

const text = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

/** The `?limit` of a listing: an integer from 1 to 1000, default 100; `INVALID_INPUT` otherwise. */
function limitOf(v: string | undefined): number {
  if (v === undefined || v === "") return DEFAULT_LIMIT;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_LIMIT) throw new AgentBusError("INVALID_INPUT", `limit must be an integer from 1 to ${MAX_LIMIT}`);
  return n;
}

/** One stored audit record as the route shows it. */
function auditView(on: Bus, r: StreamRecord): AuditView {
  const entry = verifyAuditRecord(on.envelopes, { subject: r.subject, data: r.data, headers: r.headers, seq: r.sequence });
  const { record } = entry;
  const from = text(record.from);
  const code = text(record.code);
  const message = text(record.reason) ?? text(record.message);
  return {
    sequence: r.sequence,
    time: new Date(r.storedAt).toISOString(),
    kind: entry.kind,
    ...(from !== undefined && { from }),
    ...(code !== undefined && { code }),
    ...(message !== undefined && { message }),
    verified: entry.verified,
    record,
  };
}

/**
 * The newest records of `on`'s tenant's audit stream, newest first: at
 * most `limit`, of kind `kind` when given.
 */
export async function readAuditNewest(on: Bus, limit: number, kind?: string): Promise<AuditView[]> {
  const filter = kind === undefined ? `${on.subjects.prefix}.audit.>` : on.subjects.audit(kind);
  try {
    return await readNewest(jetstream(on.nc), on.subjects.stream("AUDIT"), filter, limit, (r) => auditView(on, r));
  } catch (err) {
    if (/permission/i.test(String((err as Error)?.message ?? err))) {
      throw new AgentBusError("DENIED", "this connection may not read the audit stream (server permissions: bridges and admins)", { cause: err });
    }
    throw err;
  }
}

/**
 * Registers `GET /v1/audit` on the monitor's `app` (whose error handler
 * answers what it throws as `{code, message}`): `{records: AuditView[]}`,
 * newest first, `?limit` of them (1..1000, default 100), of kind `?kind`
 * when given (`INVALID_INPUT` for a kind that is not one subject token of
 * `[a-z0-9_-]`). The records are the tenant's, whoever the caller is:
 * audit records belong to no caller, so a caller name does not narrow
 * them; reading them is the server's to allow (bridges and admins under
 * the role permissions: 403 `DENIED` otherwise).
 */
export function auditRoutes(app: FastifyInstance, { callerOf }: MonitorRouteContext): void {
  app.get<{ Querystring: { kind?: string; limit?: string } }>("/v1/audit", async (req, reply) => {
    const on = callerOf(req, reply);
    if (!on) return reply;
    const limit = limitOf(req.query.limit);
    return { records: await readAuditNewest(on, limit, req.query.kind || undefined) };
  });
}
