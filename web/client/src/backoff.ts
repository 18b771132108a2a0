// Reconnect delays: exponential growth from `initialMs`, capped at `maxMs`,
// times a random factor in [0.5, 1) so that the clients of a restarted
// server do not all come back at once (the Rust client's `Backoff`).

/** How long to wait before reconnect attempt `n`. */
export class Backoff {
  /** Delay before the first retry, in milliseconds. */
  readonly initialMs: number;
  /** Largest delay before jitter, in milliseconds. */
  readonly maxMs: number;
  /** Source of the jitter factor, uniform in [0, 1); replaceable in tests. */
  private readonly random: () => number;

  constructor(initialMs = 250, maxMs = 10_000, random: () => number = Math.random) {
    this.initialMs = initialMs;
    this.maxMs = maxMs;
    this.random = random;
  }

  /**
   * The delay before retry `attempt` (0-based), in milliseconds:
   * `initialMs * 2^attempt`, capped at `maxMs`, then scaled by a random
   * factor in [0.5, 1).
   */
  delayMs(attempt: number): number {
    const exponent = Math.min(Math.max(attempt, 0), 20);
    const base = Math.min(this.initialMs * 2 ** exponent, this.maxMs);
    return base * (0.5 + 0.5 * this.random());
  }

  /** A jitter factor, uniform in [0, 1). */
  jitter(): number {
    return this.random();
  }
}
