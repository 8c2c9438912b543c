/**
 * What the connected nats-server supports. The floor is 2.9.10; newer
 * features are used only when the server's version says they work, because
 * 2.9 silently ignores several of them (per-message TTL, `term` reasons).
 */
export interface ServerFeatures {
  version: string;
  /** Consumers with several filter subjects, consumer metadata (2.10). */
  multiFilter: boolean;
  /** Streams that republish with a subject transform (2.10): the live copy of task events on `<root>.<t>.task.<task>.events`. */
  republish: boolean;
  /** Per-message TTL and subject delete markers (2.11). */
  messageTtl: boolean;
  /** `term` with a reason recorded in the advisory (2.11). */
  termReason: boolean;
  /**
   * Message schedules (2.12): a stream with `allow_msg_schedules` publishes
   * a message carrying `Nats-Schedule: @at <time>` to its
   * `Nats-Schedule-Target` at that time. Delayed tasks need them.
   */
  schedules: boolean;
  /**
   * Recurring message schedules (2.14): `Nats-Schedule` with a 6-field cron
   * expression or `@every <duration>`, and `Nats-Schedule-Time-Zone`.
   * Recurring tasks need them.
   */
  cron: boolean;
  /**
   * Compare-and-set (expected last subject sequence) is atomic on
   * replicated streams (2.9.21, nats-server#4320). Before, two writers
   * expecting the same revision of a key on an R3 bucket can both succeed.
   * A single server is not affected.
   */
  replicatedCas: boolean;
}

/** Compares dotted versions numerically: <0, 0, >0. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((n) => Number.parseInt(n, 10) || 0);
  const pb = b.split(/[.-]/).map((n) => Number.parseInt(n, 10) || 0);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Features of a server reporting `version`. */
export function featuresOf(version: string): ServerFeatures {
  const atLeast = (v: string) => compareVersions(version, v) >= 0;
  return { version, multiFilter: atLeast("2.10.0"), republish: atLeast("2.10.0"), messageTtl: atLeast("2.11.0"), termReason: atLeast("2.11.0"), schedules: atLeast("2.12.0"), cron: atLeast("2.14.0"), replicatedCas: atLeast("2.9.21") };
}
