/**
 * Two CPU fixes for `@nats-io/nats-core` 3.x, applied once on import.
 *
 * 1. Requests.
 * nats-core settles an answered request's promise, then calls `cancel()`,
 * which rejects that same (already settled, so unobservable) promise with a
 * new `RequestError("cancelled")`: an Error, stack captured, per answered
 * request. On the bus every call, JetStream publish and KV read or write is
 * a request, so that error alone was ~7% of a task worker's CPU (profiled
 * with bench/tasks). Requests remember that they were answered, and cancel
 * then skips the error; a cancel with a reason, or of an unanswered request
 * (timeout, connection closed), is untouched.
 *
 * 2. Socket writes. nats-core writes what a connection queued at the end
 * of the microtask that queued it, so a process busy with many tasks at
 * once makes one socket write (a syscall, often a TCP packet) per message:
 * ~12% of a task worker's CPU in bench/tasks. Writes are coalesced up to
 * the end of the event-loop turn instead (`setImmediate`): one write for
 * everything the turn's callbacks and their promise chains published. A
 * full buffer still goes out at once, as do `flush()` and a (re)connect.
 */
import { ProtocolHandler, RequestOne } from "@nats-io/nats-core/internal";

interface Answerable {
  answered?: boolean;
  timer?: { cancel(): void };
  mux: { cancel(r: unknown): void };
}

const PATCHED = Symbol.for("agentbus.natsfix.requestOne");
const proto = RequestOne.prototype as unknown as {
  resolver: (this: Answerable, err: Error | null, msg: unknown) => void;
  cancel: (this: Answerable, err?: Error) => void;
  [PATCHED]?: true;
};

/** Whether the fix is in place (it is skipped if nats-core's request class changes shape). */
export const requestFixApplied = ((): boolean => {
  if (proto[PATCHED]) return true;
  const { resolver, cancel } = proto;
  if (typeof resolver !== "function" || typeof cancel !== "function") return false;
  proto.resolver = function (err, msg) {
    this.answered = true;
    resolver.call(this, err, msg);
  };
  proto.cancel = function (err) {
    if (!this.answered || err) return cancel.call(this, err);
    this.timer?.cancel();
    this.mux.cancel(this);
  };
  proto[PATCHED] = true;
  return true;
})();

interface Outbound {
  outbound: { length(): number; size(): number; fill(buf: Uint8Array, ...more: Uint8Array[]): void };
  pendingLimit: number;
  flushPending(): void;
  [FLUSH]?: NodeJS.Immediate;
}

const FLUSH = Symbol.for("agentbus.natsfix.flush");
const WRITES_PATCHED = Symbol.for("agentbus.natsfix.sendCommand");
const encoder = new TextEncoder();
const handler = ProtocolHandler.prototype as unknown as {
  sendCommand: (this: Outbound, cmd: string | Uint8Array, ...payloads: Uint8Array[]) => void;
  flushPending: (this: Outbound) => void;
  [WRITES_PATCHED]?: true;
};

/** Whether socket writes are coalesced per event-loop turn (skipped if nats-core's protocol class changes shape). */
export const writeFixApplied = ((): boolean => {
  if (handler[WRITES_PATCHED]) return true;
  if (typeof handler.sendCommand !== "function" || typeof handler.flushPending !== "function") return false;
  handler.sendCommand = function (cmd, ...payloads) {
    const empty = this.outbound.length() === 0;
    this.outbound.fill(typeof cmd === "string" ? encoder.encode(cmd) : cmd, ...payloads);
    if (this.outbound.size() >= this.pendingLimit) this.flushPending();
    else if (empty && !this[FLUSH]) {
      this[FLUSH] = setImmediate(() => {
        this[FLUSH] = undefined;
        this.flushPending();
      });
    }
  };
  handler[WRITES_PATCHED] = true;
  return true;
})();
