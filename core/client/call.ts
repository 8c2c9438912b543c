/**
 * The caller side of fast calls: one request/reply engine for every call
 * the bus makes, whether it goes to one running instance of an agent, a
 * capability's queue group, one identity, or another tenant's export.
 */
import { errors as natsErrors } from "@nats-io/nats-core";
import type { CallOptions } from "../options.js";
import { checkDepth, regionOf } from "../options.js";
import type { Runtime } from "../runtime.js";
import { Header, type Envelope, type EnvelopeMeta } from "../security/envelope.js";
import { AgentBusError, isAgentBusError, type ErrorCode } from "../wire/errors.js";
import { parseMessage, toMessage, type Input } from "../wire/message.js";
import type { Message } from "../wire/protocol.js";
import { Subjects, checkCapability } from "../wire/subjects.js";
import { activeTracer, busSpan, endSpan, traceOf } from "../wire/trace.js";

/**
 * Fast call: request/reply to any replica serving `cap` (or to one agent
 * with `target`). Resolves to the reply message; refusals and handler
 * failures reject with an {@link AgentBusError} carrying the remote code.
 */
export async function call(rt: Runtime, cap: string, input: Input, options: CallOptions = {}): Promise<Message> {
  const observer = rt.options.observer;
  if (!observer?.call) return send(rt, cap, input, options);
  const start = performance.now();
  let outcome: "ok" | "error" | ErrorCode = "error";
  try {
    const reply = await send(rt, cap, input, options);
    outcome = "ok";
    return reply;
  } catch (err) {
    if (isAgentBusError(err)) outcome = err.code;
    throw err;
  } finally {
    try {
      observer.call(cap, performance.now() - start, outcome);
    } catch { /* an observer never fails a call */ }
  }
}

async function send(rt: Runtime, cap: string, input: Input, options: CallOptions): Promise<Message> {
  const foreign = options.tenant !== undefined && options.tenant !== rt.subjects.tenant;
  if (options.target) checkCapability(cap);
  const depth = options.depth ?? 0;
  checkDepth(depth, rt.options.maxDepth, "call");
  let message = toMessage(input);
  if (options.context) message.contextId ??= options.context;
  // Large parts travel as claim checks (blobs), as a durable task's do.
  message = await rt.carry(message, { submitter: rt.id, task: message.messageId }, `the input of a call to ${cap}`);
  const body = Buffer.from(JSON.stringify(message));
  // One running instance of a provider, when the registry knows one: the
  // call is addressed (and MACed) to it alone, so it needs no shared
  // replay claim on the way in.
  const region = regionOf(options.region);
  if (region !== undefined && foreign) throw new AgentBusError("MISUSE", "region is not available for another tenant's capability: its instances are not in this tenant's registry");
  let pick = foreign ? undefined : pickInstance(rt, cap, options.target, region);
  const shared = options.target ? rt.subjects.agentCall(options.target) : foreign ? new Subjects(rt.subjects.root, options.tenant).cap(cap) : rt.subjects.cap(cap);
  // A CLIENT span only when an OpenTelemetry SDK is registered; the envelope carries its context.
  const tracer = activeTracer();
  // Its destination is the capability's (or the target's) subject, whichever instance answers.
  const span = tracer && busSpan(tracer, "call", cap, shared, rt.subjects.tenant, options.trace, options.target, options.task);
  const meta: EnvelopeMeta = {
    task: options.task, context: options.context ?? message.contextId, parent: options.parent, depth,
    capability: options.target || pick ? cap : undefined, trace: traceOf(span, options.trace),
  };
  try {
    let reply: Message | undefined;
    while (pick) {
      try {
        reply = await requestOrSign(rt, cap, rt.subjects.instanceCall(pick.agent, pick.instance), body, meta, [pick.agent], options, options.encrypt ? [pick.agent] : undefined);
        break;
      } catch (err) {
        // Gone without withdrawing its presence (killed): skip it until its presence expires, try another.
        if (!isAgentBusError(err, "NO_RESPONDERS")) throw err;
        if (rt.silent.size >= 10_000) rt.silent.clear();
        rt.silent.set(`${pick.agent}.${pick.instance}`, Date.now() + rt.options.presenceMaxAgeMs);
        pick = pickInstance(rt, cap, options.target, region);
      }
    }
    // A region asked for: only its instances, never the queue group (which may answer from anywhere).
    if (!reply && region !== undefined) throw new AgentBusError("NO_RESPONDERS", `no running instance of ${options.target ?? cap} in region ${region}`);
    if (!reply) {
      // No instance known: the capability's (or the target's) queue group; MACed for the agents we know serve it, signed when we know none.
      meta.capability = options.target ? cap : undefined;
      const recipients = options.target ? [options.target] : foreign ? [] : rt.registry.providers(cap);
      const encryptFor = options.encrypt ? callRecipients(rt, cap, options.target, foreign) : undefined;
      reply = await requestOrSign(rt, cap, shared, body, meta, recipients, options, encryptFor);
    }
    if (span) endSpan(span);
    return reply;
  } catch (err) {
    if (span) endSpan(span, err);
    throw err;
  }
}

/**
 * A running instance of `target`, else of an online provider of `cap`,
 * chosen at random (each instance takes an even share) among those in
 * `region` when given, else among those in this connection's own region
 * when there are any, else among all; never a revoked one or one that just
 * did not answer.
 */
function pickInstance(rt: Runtime, cap: string, target: string | undefined, region: string | undefined): { agent: string; instance: string } | undefined {
  const agents = target ? [target] : rt.registry.providers(cap);
  if (agents.length === 0) return undefined;
  const now = Date.now();
  const liveIn = (where: string | undefined) => {
    const live: Array<{ agent: string; instance: string }> = [];
    for (const agent of agents) {
      if (rt.isRevoked(agent)) continue;
      for (const instance of rt.registry.instances(agent, where)) {
        const gone = rt.silent.get(`${agent}.${instance}`);
        if (gone !== undefined) {
          if (gone > now) continue;
          rt.silent.delete(`${agent}.${instance}`);
        }
        live.push({ agent, instance });
      }
    }
    return live;
  };
  const home = rt.options.region;
  let live = liveIn(region ?? home);
  if (live.length === 0 && region === undefined && home !== undefined) live = liveIn(undefined);
  return live.length === 0 ? undefined : live[Math.floor(Math.random() * live.length)];
}

/**
 * Who an encrypted call is encrypted for: the target, else the online
 * providers the registry knows (every registered one when none is
 * online), never a revoked identity.
 */
function callRecipients(rt: Runtime, cap: string, target: string | undefined, foreign: boolean): string[] {
  if (foreign) throw new AgentBusError("MISUSE", "encrypt is not available for another tenant's capability: its providers are not in this tenant's registry");
  if (target) {
    if (rt.isRevoked(target)) throw new AgentBusError("REVOKED", `${target} is revoked: nothing is encrypted for it`);
    return [target];
  }
  const online = rt.registry.providers(cap).filter((id) => !rt.isRevoked(id));
  return online.length > 0 ? online : rt.encryptionRecipients(cap);
}

async function requestOrSign(rt: Runtime, cap: string, subject: string, body: Uint8Array, meta: EnvelopeMeta, recipients: string[], o: CallOptions, encryptFor?: string[]): Promise<Message> {
  try {
    return await request(rt, subject, body, meta, recipients, o, encryptFor);
  } catch (err) {
    // An agent we did not know of (a new replica) cannot check our MACs: sign instead.
    if (isAgentBusError(err, "UNSIGNED") && recipients.length > 0) return request(rt, subject, body, meta, [], o, encryptFor);
    // Nor open what we encrypted: encrypt again for the providers known now (the registry has likely caught up).
    if (encryptFor && isAgentBusError(err, "NOT_RECIPIENT") && !o.target) {
      return request(rt, subject, body, meta, rt.registry.providers(cap), o, callRecipients(rt, cap, undefined, false));
    }
    throw err;
  }
}

/**
 * The one request/reply engine of the bus: seals `plain` for `subject`
 * (MACed for `recipients`, signed when there are none; encrypted end to end
 * for `encryptFor`), sends it, waits for the reply (`timeout`, default 30 s;
 * `signal` aborts with `CANCELLED`) and opens it: the reply must be sealed
 * for this request by `target` when given, and an error reply throws its
 * code. Transport failures become `NO_RESPONDERS`, `TIMEOUT`, `CLOSED` or
 * `UNAVAILABLE`.
 */
export async function exchange(
  rt: Runtime, subject: string, plain: Uint8Array, meta: EnvelopeMeta, recipients: string[],
  o: Pick<CallOptions, "timeout" | "signal" | "target">, encryptFor?: string[],
): Promise<{ env: Envelope; data: Uint8Array }> {
  let headers;
  let body = plain;
  if (encryptFor) ({ headers, body } = rt.envelopes.sealEncrypted(subject, plain, encryptFor, meta, recipients));
  else headers = rt.envelopes.seal(subject, body, meta, recipients);
  const pending = rt.nc.request(subject, body, { timeout: o.timeout ?? 30_000, headers });
  let reply;
  try {
    reply = await (o.signal ? abortable(pending, o.signal) : pending);
  } catch (err) {
    throw requestError(err, subject);
  }
  return rt.envelopes.openReply(reply, headers.get(Header.id), o.target);
}

/** {@link exchange} for a call: the reply is an A2A message. */
async function request(rt: Runtime, subject: string, plain: Uint8Array, meta: EnvelopeMeta, recipients: string[], o: CallOptions, encryptFor?: string[]): Promise<Message> {
  return rt.uncarry(parseMessage((await exchange(rt, subject, plain, meta, recipients, o, encryptFor)).data));
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new AgentBusError("CANCELLED", "call aborted", { cause: signal.reason }));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AgentBusError("CANCELLED", "call aborted", { cause: signal.reason }));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function requestError(err: unknown, subject: string): unknown {
  if (err instanceof AgentBusError) return err;
  if (err instanceof natsErrors.RequestError && err.isNoResponders()) {
    return new AgentBusError("NO_RESPONDERS", `no agent serves ${subject}`, { cause: err });
  }
  if (err instanceof natsErrors.NoRespondersError) return new AgentBusError("NO_RESPONDERS", `no agent serves ${subject}`, { cause: err });
  if (err instanceof natsErrors.TimeoutError) return new AgentBusError("TIMEOUT", `no reply on ${subject} in time`, { cause: err });
  if (err instanceof natsErrors.ClosedConnectionError || err instanceof natsErrors.DrainingConnectionError) {
    return new AgentBusError("CLOSED", "the bus connection is closed", { cause: err });
  }
  return new AgentBusError("UNAVAILABLE", `request on ${subject} failed: ${(err as Error).message}`, { cause: err });
}
