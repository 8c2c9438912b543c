/**
 * Remembers message ids for at least `windowMs`, in two generations that
 * rotate: O(1) per message and memory bounded by the traffic of two windows.
 * Pair it with a timestamp check of the same window so an id older than the
 * memory is refused as expired rather than accepted again.
 */
export class ReplayGuard {
  #current = new Set<string>();
  #previous = new Set<string>();
  #rotatedAt = Number.NEGATIVE_INFINITY;
  readonly #generationMs: number;

  constructor(windowMs: number) {
    // A message is accepted while |now - ts| <= window, so a replay can arrive
    // up to 2×window after the first copy: each generation spans that.
    this.#generationMs = 2 * windowMs;
  }

  /** Records `id`; false when it was already seen. */
  firstSeen(id: string, now = Date.now()): boolean {
    if (now - this.#rotatedAt >= this.#generationMs) {
      this.#previous = now - this.#rotatedAt >= 2 * this.#generationMs ? new Set() : this.#current;
      this.#current = new Set();
      this.#rotatedAt = now;
    }
    if (this.#current.has(id) || this.#previous.has(id)) return false;
    this.#current.add(id);
    return true;
  }
}
