/**
 * A CPU fix for `@nats-io/nats-core` 3.x requests, applied once on import.
 *
 * nats-core settles an answered request's promise, then calls `cancel()`,
 * which rejects that same (already settled, so unobservable) promise with a
 * new `RequestError("cancelled")`: an Error, stack captured, per answered
 * request. On the bus every call, JetStream publish and KV read or write is
 * a request, so that error alone was ~7% of a task worker's CPU (profiled
 * with bench/tasks). Requests remember that they were answered, and cancel
 * then skips the error; a cancel with a reason, or of an unanswered request
 * (timeout, connection closed), is untouched.
 */
import { RequestOne } from "@nats-io/nats-core/internal";

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
