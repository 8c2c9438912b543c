/**
 * The one way an agent answers a request (a fast call, a cancel request):
 * sealed for `_reply.<request id>`, MACed for the verified sender (signed
 * when the sender could not be verified: no MAC key for an identity not
 * proven), encrypted for it when the request was, carrying the request's
 * context, task and trace; an error reply carries its code
 * (`Mesh-Error-Code`, and the micro service error headers with the code's
 * status).
 */
import type { Msg } from "@nats-io/nats-core";
import type { ServiceMsg } from "@nats-io/services";
import { Header, replySubject, type Envelope, type EnvelopeMeta, type Envelopes } from "../security/envelope.js";
import { errorInfo, type ErrorCode } from "../wire/errors.js";

const enc = new TextEncoder();

/** Answers `msg` (nothing when it expects no reply) with `payload` as JSON; `errorCode` makes it an error reply. */
export function reply(envelopes: Envelopes, msg: Msg | ServiceMsg, env: Envelope | undefined, payload: unknown, errorCode?: ErrorCode): void {
  if (!msg.reply) return;
  let body: Uint8Array = enc.encode(JSON.stringify(payload));
  const subject = replySubject(env?.id ?? msg.headers?.get(Header.id));
  const meta: EnvelopeMeta = { context: env?.context, task: env?.task, trace: env?.trace, errorCode };
  let headers;
  if (env?.enc === undefined) headers = envelopes.seal(subject, body, meta, env ? [env.from] : undefined);
  // An encrypted request gets an encrypted answer (an error's reason may quote the input), for the caller only.
  else ({ headers, body } = envelopes.sealEncrypted(subject, body, [env.from], meta, [env.from]));
  if (!errorCode) return void msg.respond(body, { headers });
  const status = errorInfo(errorCode).status;
  // A micro service request counts its errors (`nats micro stats`); any other carries the same headers.
  if ("respondError" in msg) return void msg.respondError(status, errorCode, body, { headers });
  headers.set("Nats-Service-Error", errorCode);
  headers.set("Nats-Service-Error-Code", String(status));
  msg.respond(body, { headers });
}
