/**
 * Keeps a label's cardinality bounded: the first `max` distinct values pass
 * as they are, later new ones become `other`. Capabilities, error codes
 * and JSON-RPC method names come from callers; a flood of made-up ones must
 * not create a series each.
 */
export class BoundedLabel {
  readonly #seen = new Set<string>();

  constructor(
    readonly max: number,
    readonly other = "other",
  ) {}

  of(value: string): string {
    if (this.#seen.has(value)) return value;
    if (this.#seen.size >= this.max) return this.other;
    this.#seen.add(value);
    return value;
  }
}

/** A map that forgets its least recently used entry beyond `max` entries. */
export class Lru<K, V> {
  readonly #map = new Map<K, V>();

  constructor(readonly max: number) {}

  get(key: K): V | undefined {
    const value = this.#map.get(key);
    if (value !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, value);
    }
    return value;
  }

  set(key: K, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    if (this.#map.size > this.max) this.#map.delete(this.#map.keys().next().value!);
  }

  get size(): number {
    return this.#map.size;
  }
}
