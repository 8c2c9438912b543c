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
        if (e.delta === 0 || e.isUpdate) markReady();
      }
    })();
    await mirror.ready;
    clearTimeout(fallback);
    return mirror;
  }

  get(key: string): T | undefined {
    return this.entries.get(key)?.value;
  }

  stop(): void {
    this.#stop();
  }
}
