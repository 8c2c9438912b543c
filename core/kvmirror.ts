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
 * A local copy of a KV bucket kept current by a watch, so reads cost no
 * round trip. `ready` resolves once the bucket's existing values are loaded.
 * Entries that fail to parse are skipped (and reported through `onInvalid`).
 */
export class KvMirror<T> {
  readonly entries = new Map<string, Mirrored<T>>();
  readonly ready: Promise<void>;
  #stop: () => void = () => {};
  /** Highest stream revision the watch has applied. */
  #revision = 0;
  #waiters: Array<{ revision: number; resolve: () => void }> = [];

  private constructor(ready: Promise<void>) {
    this.ready = ready;
  }

  static async start<T>(
    kv: KV,
    parse: (entry: KvEntry) => T,
    onChange?: MirrorListener<T>,
    onInvalid?: (key: string, err: unknown) => void,
  ): Promise<KvMirror<T>> {
    let markReady!: () => void;
    const mirror = new KvMirror<T>(new Promise<void>((r) => (markReady = r)));
    const { values } = await kv.status();
    if (values === 0) markReady();
    const watch = await kv.watch();
    mirror.#stop = () => watch.stop();
    // Entries can expire (bucket max age) between status() and the watch:
    // never wait for an initial load longer than this.
    const fallback = setTimeout(markReady, 2000);
    void (async () => {
      for await (const e of watch) {
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
        mirror.#applied(e.revision);
        if (e.delta === 0 || e.isUpdate) markReady();
      }
    })();
    await mirror.ready;
    clearTimeout(fallback);
    return mirror;
  }

  #applied(revision: number): void {
    this.#revision = Math.max(this.#revision, revision);
    this.#waiters = this.#waiters.filter((w) => (w.revision <= this.#revision ? (w.resolve(), false) : true));
  }

  /**
   * Resolves once the mirror holds every write up to `revision` (a put's
   * result, or the bucket's last sequence after a delete), so a caller reads
   * its own writes. Gives up quietly after `timeoutMs`: the watch lags, it
   * does not lose entries.
   */
  async caughtUp(revision: number, timeoutMs = 2000): Promise<void> {
    if (revision <= this.#revision) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.#waiters.push({ revision, resolve })),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
    ]);
    clearTimeout(timer);
  }

  get(key: string): T | undefined {
    return this.entries.get(key)?.value;
  }

  stop(): void {
    this.#stop();
  }
}
