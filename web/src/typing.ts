// Typing notices both ways: our own (Typing active=true at most every
// throttle period while typing, active=false after an idle time or on send)
// and other people's (each expires unless refreshed). Names are keyed as
// the server keys them.

import { type Clock, type TimerHandle, Timer } from "./deps";
import { nameKey } from "./names";
import { compareNames } from "./presence";

export interface TypingOptions {
  clock: Clock;
  /** Re-send Typing(active=true) at most this often while typing. */
  throttleMs: number;
  /** Send Typing(active=false) after this much idle time. */
  idleMs: number;
  /** Drop someone's notice after this long without refresh. */
  expireMs: number;
  /** Sends Typing(active); returns nothing. */
  send(active: boolean): void;
  /** Whether a Typing(false) can go out now (joined). */
  canSend(): boolean;
  /** The names typing now, sorted. */
  onTypers(names: string[]): void;
}

export class Typing {
  private active = false;
  private sentAt = 0;
  private readonly idle: Timer;
  private readonly typers = new Map<string, { name: string; timer: TimerHandle }>();

  constructor(private readonly o: TypingOptions) {
    this.idle = new Timer(o.clock);
  }

  /** Our user edited the input. */
  userTyping(): void {
    const now = this.o.clock.now();
    if (!this.active || now - this.sentAt >= this.o.throttleMs) {
      this.active = true;
      this.sentAt = now;
      this.o.send(true);
    }
    this.idle.set(() => this.stop(), this.o.idleMs);
  }

  /** Our user stopped (sent, cleared the input, idle). */
  stop(): void {
    this.idle.clear();
    if (!this.active) return;
    this.active = false;
    if (this.o.canSend()) this.o.send(false);
  }

  /** The connection is gone: whatever we said no longer holds, and nobody else is typing. */
  reset(): void {
    this.active = false;
    this.idle.clear();
    this.clearTypers();
  }

  /** Someone else is typing (refreshes their expiry). */
  setTyper(name: string): void {
    const key = nameKey(name);
    const old = this.typers.get(key);
    if (old) this.o.clock.clearTimeout(old.timer);
    const timer = this.o.clock.setTimeout(() => {
      this.typers.delete(key);
      this.emit();
    }, this.o.expireMs);
    this.typers.set(key, { name, timer });
    if (!old) this.emit();
  }

  /** Someone stopped typing (said so, sent a message, or left). */
  removeTyper(name: string): void {
    const key = nameKey(name);
    const old = this.typers.get(key);
    if (!old) return;
    this.o.clock.clearTimeout(old.timer);
    this.typers.delete(key);
    this.emit();
  }

  clearTypers(): void {
    if (this.typers.size === 0) return;
    for (const t of this.typers.values()) this.o.clock.clearTimeout(t.timer);
    this.typers.clear();
    this.emit();
  }

  private emit(): void {
    this.o.onTypers([...this.typers.values()].map((t) => t.name).sort(compareNames));
  }
}
