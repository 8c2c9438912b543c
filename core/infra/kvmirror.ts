import type { KV, KvEntry } from "@nats-io/kv";

/** A mirrored entry: the parsed value and when the server stored it. */
export interface Mirrored<T> {
  value: T;
  created: Date;
  revision: number;
}

/** Called on every change; `value` undefined means the key was deleted. */
export type MirrorListener<T> = (key: string, value: Mirrored<T> | undefined, previous: Mirrored<T> | undefined) => void;

/**
 * A watch over a KV bucket that hands every operation to `onEntry` (puts,
 * deletes and purges, including a delete marker found at start), in order,
 * and tracks how far it got: `ready` resolves once the bucket's existing
 * entries are delivered, {@link KvWatch.caughtUp} waits for a revision. The
 * one watch loop under {@link KvMirror} and the policy stores.
 */
export class KvWatch {
  readonly ready: Promise<void>;
  #stop: () => void = () => {};
  /** Highest stream revision delivered. */
  #revision = 0;
  #waiters: Array<{ revision: number; resolve: () => void }> = [];

  private constructor(ready: Promise<void>) {
    this.ready = ready;
  }

  /**
   * Starts watching; resolves once the existing entries were delivered.
   * `initial` is true for those.
   */
  static async start(kv: KV, onEntry: (entry: KvEntry, initial: boolean) => void): Promise<KvWatch> {
    let markReady!: () => void;
    let loading = true;
    const w = new KvWatch(new Promise<void>((r) => (markReady = () => ((loading = false), r()))));
    const { values } = await kv.status();
    if (values === 0) markReady();
    const watch = await kv.watch();
    w.#stop = () => watch.stop();
    // Entries can expire (bucket max age) between status() and the watch:
    // never wait for an initial load longer than this.
    const fallback = setTimeout(markReady, 2000);
    void (async () => {
      for await (const e of watch) {
        onEntry(e, loading);
        w.#revision = Math.max(w.#revision, e.revision);
        w.#waiters = w.#waiters.filter((x) => (x.revision <= w.#revision ? (x.resolve(), false) : true));
        if (e.delta === 0 || e.isUpdate) markReady();
      }
    })();
    await w.ready;
    clearTimeout(fallback);
    return w;
  }

  /**
   * Resolves true once every write up to `revision` (a put's result, or the
   * bucket's last sequence after a delete) was delivered, so a caller reads
   * its own writes; false after `timeoutMs` (the watch lags, it does not
   * lose entries).
   */
  async caughtUp(revision: number, timeoutMs = 2000): Promise<boolean> {
    if (revision <= this.#revision) return true;
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([
      new Promise<boolean>((resolve) => this.#waiters.push({ revision, resolve: () => resolve(true) })),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    return ok;
  }

  /** Stops the watch. */
  stop(): void {
    this.#stop();
  }
}

/**
 * A local copy of a KV bucket kept current by a watch, so reads cost no
 * round trip. `ready` resolves once the bucket's existing values are loaded.
 * Entries that fail to parse are skipped (and reported through `onInvalid`).
 */
export class KvMirror<T> {
  readonly entries = new Map<string, Mirrored<T>>();
  #watch!: KvWatch;

  private constructor() {}

  static async start<T>(
    kv: KV,
    parse: (entry: KvEntry) => T,
    onChange?: MirrorListener<T>,
    onInvalid?: (key: string, err: unknown) => void,
  ): Promise<KvMirror<T>> {
    const mirror = new KvMirror<T>();
    mirror.#watch = await KvWatch.start(kv, (e) => {
      const previous = mirror.entries.get(e.key);
      if (e.operation === "PUT") {
        try {
          const next = { value: parse(e), created: e.created, revision: e.revision };
          mirror.entries.set(e.key, next);
          onChange?.(e.key, next, previous);
        } catch (err) {
          onInvalid?.(e.key, err);
        }
      } else if (previous) {
        mirror.entries.delete(e.key);
        onChange?.(e.key, undefined, previous);
      }
    });
    return mirror;
  }

  /** Resolves once the mirror holds every write up to `revision` (see {@link KvWatch.caughtUp}). */
  caughtUp(revision: number, timeoutMs = 2000): Promise<boolean> {
    return this.#watch.caughtUp(revision, timeoutMs);
  }

  get(key: string): T | undefined {
    return this.entries.get(key)?.value;
  }

  stop(): void {
    this.#watch.stop();
  }
}
