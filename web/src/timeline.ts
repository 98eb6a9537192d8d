// A room's confirmed messages, kept sorted by id pair and deduplicated by id,
// and the resume point: the greatest id received through the room's ordered
// stream (Joined.history and pushed ChatMessages). Messages shown because of
// an Ack are kept too but never move the resume point: an Ack may overtake
// pushes of smaller ids, which must not be skipped on resume. Older pages
// (FetchHistory) go in the same list and never move it either.

import { compareIds, maxId } from "./ids";

export interface DisplayMessage {
  id: string;
  room: string;
  username: string;
  text: string;
  sentAtMs: number;
  clientMsgId: string;
  system: boolean;
  own: boolean;
}

/**
 * Where a message came from: the ordered stream (a push: "stream"; the
 * replay in a Joined: "replay"), an Ack, or an older page.
 */
export type MessageOrigin = "stream" | "replay" | "ack" | "older";

export class Timeline {
  private readonly messages: DisplayMessage[] = [];
  private readonly seen = new Set<string>();
  private resumeId = "";
  /** False once an older page said there is nothing before it. */
  private more = true;

  /** Confirmed messages in id order. */
  get list(): readonly DisplayMessage[] {
    return this.messages;
  }

  /** The since_id the next resume would use. */
  get resumePoint(): string {
    return this.resumeId;
  }

  /** The oldest id held ("" when none): the before_id of the next older page. */
  get oldestId(): string {
    return this.messages[0]?.id ?? "";
  }

  /** Whether older messages may exist on the server. */
  get hasMore(): boolean {
    return this.more;
  }

  /** An older page said whether there is more before it. */
  set hasMore(v: boolean) {
    this.more = v;
  }

  /** Inserts in id order unless already held; returns its index, or -1 when it was not new. */
  add(msg: DisplayMessage, origin: MessageOrigin): number {
    if (origin === "stream" || origin === "replay") this.resumeId = maxId(this.resumeId, msg.id);
    if (this.seen.has(msg.id)) return -1;
    this.seen.add(msg.id);
    // Binary search for the first element with a greater id.
    let lo = 0;
    let hi = this.messages.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareIds(this.messages[mid]!.id, msg.id) < 0) lo = mid + 1;
      else hi = mid;
    }
    this.messages.splice(lo, 0, msg);
    return lo;
  }
}
