// What the reader has not seen: while the page is hidden, messages from
// others count as unread (shown in the title, "(3) sistemas-distribuidos"),
// and the first of them is where the "unread" line goes. Pure: the view
// feeds it visibility changes and messages.

export class Unread {
  private hidden = false;
  private n = 0;
  /** The id of the first message that arrived while hidden, since the page was last hidden. */
  private first: string | null = null;

  /** The page became hidden or visible. Becoming visible clears the count (the line stays). */
  setHidden(hidden: boolean): void {
    if (hidden && !this.hidden) this.first = null; // a new absence: the line moves
    this.hidden = hidden;
    if (!hidden) this.n = 0;
  }

  get isHidden(): boolean {
    return this.hidden;
  }

  /**
   * A new live message. Returns true when it is the first one missed since
   * the page was hidden (the unread line goes before it).
   */
  onMessage(id: string, own: boolean): boolean {
    if (!this.hidden || own) return false;
    this.n++;
    if (this.first === null) {
      this.first = id;
      return true;
    }
    return false;
  }

  get count(): number {
    return this.n;
  }

  /** Where the unread line is (null when there is none). */
  get firstUnread(): string | null {
    return this.first;
  }

  /** The page title: "(3) room" while there are unread messages, else "room". */
  title(room: string): string {
    return this.n > 0 ? `(${this.n}) ${room}` : room;
  }
}
