// The outside world as the session sees it: the WebSocket, timers, clock,
// randomness and storage, each an interface so that tests inject fakes.

/** The part of the browser WebSocket the session uses. */
export interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type TimerHandle = unknown;

export interface Clock {
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  now(): number;
  /** Uniform in [0, 1). */
  random(): number;
}

export const realClock: Clock = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof setTimeout>),
  now: () => Date.now(),
  random: () => Math.random(),
};

/** The part of the Web Storage API the client uses (sessionStorage, localStorage). */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The tab's sessionStorage, or null where there is none (or it is disabled). */
export function tabStorage(): StorageLike | null {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // a SecurityError where storage is blocked
  }
}

/** The browser's localStorage, or null where there is none (or it is disabled). */
export function localStore(): StorageLike | null {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null;
  }
}

/** One named timer: setting it again replaces the previous one. */
export class Timer {
  private handle: TimerHandle | null = null;

  constructor(private readonly clock: Clock) {}

  set(fn: () => void, ms: number): void {
    this.clear();
    this.handle = this.clock.setTimeout(() => {
      this.handle = null;
      fn();
    }, ms);
  }

  clear(): void {
    if (this.handle !== null) this.clock.clearTimeout(this.handle);
    this.handle = null;
  }

  get pending(): boolean {
    return this.handle !== null;
  }
}
