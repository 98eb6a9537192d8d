// How long to wait before reconnecting: the first retry after a connection
// that worked goes out at once (a little jitter); consecutive failures back
// off exponentially with full jitter up to a cap. `Backoff` counts the
// failures in a row and keeps the delays it chose (for tests and diagnostics).

/** Longest wait between two Hello attempts while our old name is still held. */
export const HELLO_RETRY_CAP_MS = 2_000;

/** Full-jitter exponential backoff: random() * min(cap, base * 2^attempt). */
export function backoffDelay(attempt: number, random: () => number, baseMs = 250, capMs = 10_000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * The wait before a reconnect after `failures` failed attempts in a row: the
 * first retry goes out at once (random() * jitter), later ones back off
 * (backoffDelay of failures - 1).
 */
export function reconnectDelay(failures: number, random: () => number, jitterMs = 100, baseMs = 250, capMs = 10_000): number {
  if (failures <= 0) return Math.floor(random() * jitterMs);
  return backoffDelay(failures - 1, random, baseMs, capMs);
}

export interface BackoffOptions {
  random: () => number;
  jitterMs: number;
  baseMs: number;
  capMs: number;
}

/** Failed attempts in a row, and the delay each next one waits. */
export class Backoff {
  /** Failed connection attempts in a row. */
  private attempt = 0;
  /** Delays chosen, most recent last. */
  readonly history: number[] = [];

  constructor(private readonly opts: BackoffOptions) {}

  get failures(): number {
    return this.attempt;
  }

  /** The wait before the next reconnect; counts one more failure. */
  nextReconnect(): number {
    const o = this.opts;
    return this.record(reconnectDelay(this.attempt, o.random, o.jitterMs, o.baseMs, o.capMs));
  }

  /**
   * The wait before asking for our name again. The server answered, so it is
   * reachable: the name frees within seconds. Poll at most every
   * HELLO_RETRY_CAP_MS rather than backing off to the full reconnect cap.
   */
  nextHello(): number {
    const o = this.opts;
    return this.record(backoffDelay(this.attempt, o.random, o.baseMs, Math.min(o.capMs, HELLO_RETRY_CAP_MS)));
  }

  /** A connection worked (the room is joined): the count starts over. */
  reset(): void {
    this.attempt = 0;
  }

  private record(delay: number): number {
    this.attempt++;
    this.history.push(delay);
    return delay;
  }
}
