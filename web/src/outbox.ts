// Messages sent but not confirmed yet, by client_msg_id. Each is sent again,
// with the same client_msg_id, after every resume (the server dedupes) and,
// after a retryable refusal (rate limit, not in room, unavailable), after a
// growing delay with jitter.

import { type Clock, type TimerHandle } from "./deps";

export interface PendingMessage {
  clientMsgId: string;
  text: string;
  status: "pending" | "failed";
  error?: string;
}

export interface OutboxEntry {
  clientMsgId: string;
  text: string;
  /** Refusals so far: the retry delay grows with them. */
  retries: number;
  retryTimer: TimerHandle | null;
}

export class Outbox {
  private readonly entries = new Map<string, OutboxEntry>();

  constructor(
    private readonly clock: Clock,
    private readonly capMs: number,
  ) {}

  add(clientMsgId: string, text: string): OutboxEntry {
    const entry: OutboxEntry = { clientMsgId, text, retries: 0, retryTimer: null };
    this.entries.set(clientMsgId, entry);
    return entry;
  }

  get(clientMsgId: string): OutboxEntry | undefined {
    return this.entries.get(clientMsgId);
  }

  has(clientMsgId: string): boolean {
    return this.entries.has(clientMsgId);
  }

  /** In the order they were queued. */
  all(): IterableIterator<OutboxEntry> {
    return this.entries.values();
  }

  get pending(): PendingMessage[] {
    return [...this.entries.values()].map((e) => ({ clientMsgId: e.clientMsgId, text: e.text, status: "pending" as const }));
  }

  /** Removes an entry (confirmed or failed for good); false when it was not there. */
  remove(clientMsgId: string): boolean {
    const entry = this.entries.get(clientMsgId);
    if (!entry) return false;
    this.cancelRetry(entry);
    this.entries.delete(clientMsgId);
    return true;
  }

  /** Sends `entry` again later through `transmit`, after a delay that grows with its refusals. */
  retryLater(entry: OutboxEntry, transmit: (e: OutboxEntry) => void): void {
    entry.retries++;
    const delay = Math.min(this.capMs, 500 * entry.retries) + Math.floor(this.clock.random() * 250);
    entry.retryTimer = this.clock.setTimeout(() => {
      entry.retryTimer = null;
      if (this.entries.has(entry.clientMsgId)) transmit(entry);
    }, delay);
  }

  cancelRetry(entry: OutboxEntry): void {
    if (entry.retryTimer !== null) this.clock.clearTimeout(entry.retryTimer);
    entry.retryTimer = null;
  }

  cancelAllRetries(): void {
    for (const e of this.entries.values()) this.cancelRetry(e);
  }
}
