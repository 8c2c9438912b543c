import { DeliverPolicy, jetstream, type ConsumerMessages } from "@nats-io/jetstream";
import { retryJs, type Bus, type Subjects } from "../../core/internal.js";

/** A stream being read by an ordered consumer; `stop` also deletes the consumer on the server. */
export interface Reading {
  messages: ConsumerMessages;
  stop(): void;
}

/**
 * Reads `stream` (one of the tenant's, or with `names` of a region's task
 * plane) through an ordered consumer filtered
 * on `subject`, from stream sequence `from`, or from the first message
 * stored at or after `from` when it is a time (default: its first message).
 * `stop` deletes the consumer at once rather than after its inactivity
 * threshold. With `onlyStored`, undefined when nothing is stored yet.
 *
 * "From now" is a sequence (the stream's last + 1), not DeliverPolicy.New:
 * an ordered consumer that resets before its first message would otherwise
 * restart from sequence 1.
 */
export async function readStream(bus: Bus, stream: "EVENTS" | "AUDIT", subject: string, from?: number | Date, onlyStored = false, names: Subjects = bus.subjects): Promise<Reading | undefined> {
  const start = from === undefined
    ? { deliver_policy: DeliverPolicy.All }
    : from instanceof Date
      ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: from.toISOString() }
      : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from };
  const consumer = await retryJs(() => jetstream(bus.nc).consumers.get(names.stream(stream), { filter_subjects: subject, ...start }));
  const remove = () => void consumer.delete().catch(() => {});
  if (onlyStored && (await consumer.info(true)).num_pending === 0) {
    remove();
    return undefined;
  }
  const messages = await consumer.consume();
  let stopped = false;
  return {
    messages,
    stop: () => {
      if (stopped) return;
      stopped = true;
      messages.stop();
      remove();
    },
  };
}
