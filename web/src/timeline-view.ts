// The message list of the chat screen: confirmed messages in id order
// (older pages inserted above while the reading position stays put),
// one's own unconfirmed messages below them, presence lines (a run of
// joins and leaves is one line), day dividers, grouping of consecutive
// messages of one person, the "unread" line, the beginning-of-the-room
// marker, and mentions highlighted. Text only ever goes in as text nodes.
// Decorations that are not timeline lines (dividers, markers) carry the
// class "divider".

import { byId, el } from "./dom";
import { formatFull, formatTime, type Locale } from "./i18n";
import { continuesGroup, dayLabel, needsDivider } from "./layout";
import { splitMentions } from "./mentions";
import type { PendingMessage } from "./outbox";
import { type PresenceKind, PresenceRun, Throttle } from "./presence";
import type { DisplayMessage } from "./timeline";

/** Older presence lines are dropped beyond this many: a flood never grows the page. */
const MAX_PRESENCE_LINES = 50;
/** Presence lines are redrawn at most this often during a flood. */
export const PRESENCE_REDRAW_MS = 100;
/** Within this many pixels of the bottom, new messages keep the view at the bottom. */
const STICK_PX = 80;
/** Within this many pixels of the top, older messages are asked for. */
const OLDER_PX = 150;

export interface TimelineDeps {
  doc: Document;
  locale: Locale;
  /** The name mentions are looked for (the session's accepted name). */
  me(): string;
  /** Asks the session for an older page; false when there is nothing to ask. */
  fetchOlder(): boolean;
  /** Whether older messages may exist. */
  hasOlder(): boolean;
  now(): number;
}

export class TimelineView {
  readonly list: HTMLElement;
  private readonly doc: Document;
  /** Confirmed message elements by id, and what each shows. */
  private msgEls = new Map<string, HTMLElement>();
  private items = new WeakMap<HTMLElement, DisplayMessage>();
  /** The day divider before a message element, if it has one. */
  private dividers = new WeakMap<HTMLElement, HTMLElement>();
  private pendingEls = new Map<string, HTMLElement>();
  /** The presence line that the next join/leave goes into, while nothing came after it. */
  private presenceRun: { run: PresenceRun; line: HTMLElement } | null = null;
  private presenceLines: HTMLElement[] = [];
  private runs = new WeakMap<HTMLElement, PresenceRun>();
  private stalePresence = new Set<HTMLElement>();
  private readonly presenceRedraw: Throttle;
  private loading: HTMLElement | null = null;

  constructor(private readonly d: TimelineDeps) {
    this.doc = d.doc;
    this.list = byId(d.doc, "messages");
    this.presenceRedraw = new Throttle(() => this.drawPresence(), PRESENCE_REDRAW_MS);
    this.list.addEventListener("scroll", () => this.maybeLoadOlder());
    this.list.addEventListener("keydown", (ev) => this.onKey(ev));
    d.locale.onChange(() => this.relabel());
  }

  reset(): void {
    this.list.replaceChildren();
    this.msgEls = new Map();
    this.items = new WeakMap();
    this.dividers = new WeakMap();
    this.pendingEls = new Map();
    this.presenceRun = null;
    this.presenceLines = [];
    this.runs = new WeakMap();
    this.stalePresence = new Set();
    this.presenceRedraw.cancel();
    this.loading = null;
  }

  // ---------------------------------------------------------------- scrolling

  nearBottom(): boolean {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < STICK_PX;
  }

  scrollToBottom(): void {
    this.list.scrollTop = this.list.scrollHeight;
  }

  /** Asks for older messages when the top is in sight (also when everything fits on the screen). */
  maybeLoadOlder(): void {
    if (this.loading || !this.d.hasOlder() || this.list.scrollTop > OLDER_PX) return;
    if (!this.d.fetchOlder()) return;
    this.loading = el(this.doc, "div", "divider loading", this.d.locale.t.loadingOlder);
    this.loading.setAttribute("role", "status");
    this.list.prepend(this.loading);
  }

  /**
   * Inserts an older page's messages (the session already announced each
   * through insertConfirmed with origin "older"), keeps the reading position,
   * and marks the beginning of the room when there is nothing before.
   */
  olderDone(hasMore: boolean, anchor: { el: HTMLElement; top: number } | null, failed = false): void {
    this.loading?.remove();
    this.loading = null;
    if (anchor && anchor.el.isConnected) {
      const now = anchor.el.getBoundingClientRect().top;
      this.list.scrollTop += now - anchor.top;
    }
    if (!hasMore && !this.list.querySelector(":scope > .room-start")) {
      const start = el(this.doc, "div", "divider room-start", this.d.locale.t.roomStart);
      start.setAttribute("data-testid", "room-start");
      this.list.prepend(start);
    }
    // Still at the top (a short page, or everything fits): the next page. Not
    // after a refusal (a rate limit): the next scroll asks again.
    if (!failed) queueMicrotask(() => this.maybeLoadOlder());
  }

  /** The element at the top of the reading position, to keep it in place while older messages go in above. */
  anchor(): { el: HTMLElement; top: number } | null {
    const first = this.list.querySelector<HTMLElement>(":scope > .msg[data-id]");
    return first ? { el: first, top: first.getBoundingClientRect().top } : null;
  }

  // ---------------------------------------------------------------- messages

  /** A confirmed message at `next`'s place (the element of the message after it, or null for the end). */
  insertConfirmed(m: DisplayMessage, nextId: string | null, older: boolean): HTMLElement {
    const stick = !older && (this.nearBottom() || m.own);
    const node = this.messageElement(m);
    node.dataset.id = m.id;
    this.fillTime(node, m.sentAtMs);
    const next = nextId ? this.msgEls.get(nextId) ?? null : null;
    const before = next ? this.dividers.get(next) ?? next : this.firstPending();
    this.list.insertBefore(node, before);
    this.msgEls.set(m.id, node);
    this.items.set(node, m);
    this.layout(node);
    if (next) this.layout(next);
    if (stick) this.scrollToBottom();
    return node;
  }

  upsertPending(p: PendingMessage, me: string): void {
    const t = this.d.locale.t;
    let node = this.pendingEls.get(p.clientMsgId);
    if (!node) {
      node = this.messageElement({ username: me, text: p.text, own: true });
      node.dataset.clientId = p.clientMsgId;
      this.list.append(node);
      this.pendingEls.set(p.clientMsgId, node);
      this.scrollToBottom();
    }
    node.classList.toggle("pending", p.status === "pending");
    node.classList.toggle("failed", p.status === "failed");
    const time = node.querySelector("time")!;
    time.textContent = p.status === "failed" ? t.notSent : t.sending;
    if (p.error) node.title = p.error;
  }

  resolvePending(clientMsgId: string): void {
    this.pendingEls.get(clientMsgId)?.remove();
    this.pendingEls.delete(clientMsgId);
  }

  /** A failed message the person clicked on: dismissed. */
  dismissFailed(target: EventTarget | null): void {
    const node = (target as Element | null)?.closest?.(".msg.failed");
    if (node instanceof HTMLElement && node.dataset.clientId) this.resolvePending(node.dataset.clientId);
  }

  /** A line such as a fatal error, at the end of the confirmed timeline. */
  addEventLine(text: string, kind: string): void {
    const stick = this.nearBottom();
    this.list.insertBefore(el(this.doc, "div", `event ${kind}`, text), this.firstPending());
    if (stick) this.scrollToBottom();
  }

  /** The "unread" line, before the message with this id (the only one: an earlier one goes). */
  markUnread(id: string): void {
    this.list.querySelector(":scope > .unread")?.remove();
    const node = this.msgEls.get(id);
    if (!node) return;
    const line = el(this.doc, "div", "divider unread", this.d.locale.t.unreadLine);
    line.setAttribute("data-testid", "unread-line");
    line.setAttribute("role", "separator");
    this.list.insertBefore(line, this.dividers.get(node) ?? node);
    this.layout(node);
  }

  private messageElement(m: { username: string; text: string; system?: boolean; own?: boolean }): HTMLElement {
    const doc = this.doc;
    const root = el(doc, "div", "msg");
    root.tabIndex = -1;
    if (m.own) root.classList.add("own");
    if (m.system) root.classList.add("system");
    const meta = el(doc, "div", "meta");
    const author = el(doc, "span", "author", m.system ? m.username || this.d.locale.t.system : m.username);
    const time = el(doc, "time", "time");
    meta.append(author, time);
    const text = el(doc, "div", "text");
    for (const s of m.own || m.system ? [{ text: m.text, mention: false }] : splitMentions(m.text, this.d.me())) {
      text.append(s.mention ? el(doc, "mark", "mention", s.text) : doc.createTextNode(s.text));
    }
    if (text.querySelector(".mention")) root.classList.add("mentions-me");
    root.append(meta, text);
    return root;
  }

  private fillTime(node: HTMLElement, ms: number): void {
    if (!ms) return;
    const lang = this.d.locale.lang;
    const time = node.querySelector("time")!;
    time.textContent = formatTime(ms, lang);
    const d = new Date(ms);
    time.dateTime = d.toISOString();
    time.title = formatFull(ms, lang);
    let full = node.querySelector<HTMLElement>(".full-time");
    if (!full) {
      full = el(this.doc, "span", "full-time");
      full.setAttribute("aria-hidden", "true"); // the <time> says it to screen readers
      node.append(full);
    }
    full.textContent = formatFull(ms, lang);
  }

  /** The element that a confirmed element or event line goes before: the first pending one. */
  private firstPending(): Element | null {
    return this.list.querySelector(":scope > .msg.pending, :scope > .msg.failed");
  }

  /** The confirmed message element before `node`, and whether only decorations are between them. */
  private previousMessage(node: HTMLElement): { prev: HTMLElement | null; adjacent: boolean } {
    let adjacent = true;
    for (let e = node.previousElementSibling; e; e = e.previousElementSibling) {
      if (e instanceof HTMLElement && e.matches(".msg[data-id]")) return { prev: e, adjacent };
      if (!e.matches(".divider.day")) adjacent = false;
    }
    return { prev: null, adjacent: false };
  }

  /** Puts the day divider before a message (or takes it away) and decides whether it continues a group. */
  private layout(node: HTMLElement): void {
    const item = this.items.get(node);
    if (!item) return;
    const { prev, adjacent } = this.previousMessage(node);
    const prevItem = prev ? this.items.get(prev) ?? null : null;
    const need = item.sentAtMs > 0 && needsDivider(prevItem?.sentAtMs || null, item.sentAtMs);
    let divider = this.dividers.get(node);
    if (need && !divider) {
      divider = el(this.doc, "div", "divider day");
      divider.setAttribute("role", "separator");
      divider.setAttribute("data-testid", "day");
      divider.dataset.ms = String(item.sentAtMs);
      divider.textContent = dayLabel(item.sentAtMs, this.d.now(), this.d.locale.lang, this.d.locale.t);
      this.dividers.set(node, divider);
    }
    if (need && divider && divider.nextElementSibling !== node) this.list.insertBefore(divider, node);
    if (!need && divider) {
      divider.remove();
      this.dividers.delete(node);
    }
    const cont = !need && adjacent && continuesGroup(prevItem, item);
    node.classList.toggle("cont", cont);
  }

  // ---------------------------------------------------------------- presence

  /** True while nothing but decorations and unconfirmed messages of one's own follows `line`. */
  private isLastLine(line: HTMLElement): boolean {
    if (line.parentElement !== this.list) return false;
    let next = line.nextElementSibling;
    while (next && next.matches(".msg.pending, .msg.failed, .divider")) next = next.nextElementSibling;
    return next === null;
  }

  /**
   * A join or leave. Consecutive ones share one line (PresenceRun), so a flood
   * adds one element, redrawn at most every PRESENCE_REDRAW_MS; a message (or
   * any other line) after it starts the next run. At most MAX_PRESENCE_LINES
   * presence lines are kept, the oldest go.
   */
  addPresence(name: string, kind: PresenceKind): void {
    if (this.presenceRun && this.isLastLine(this.presenceRun.line)) {
      this.presenceRun.run.add(name, kind);
      this.stalePresence.add(this.presenceRun.line);
      this.presenceRedraw.request();
      return;
    }
    const stick = this.nearBottom();
    const line = el(this.doc, "div", "event presence");
    line.setAttribute("data-testid", "presence");
    const run = new PresenceRun();
    run.add(name, kind);
    this.runs.set(line, run);
    this.drawPresenceLine(line, run);
    this.list.insertBefore(line, this.firstPending());
    this.presenceRun = { run, line };
    this.presenceLines.push(line);
    while (this.presenceLines.length > MAX_PRESENCE_LINES) {
      const old = this.presenceLines.shift()!;
      this.stalePresence.delete(old);
      old.remove();
    }
    if (stick) this.scrollToBottom();
  }

  private drawPresence(): void {
    if (this.stalePresence.size === 0) return;
    const stick = this.nearBottom();
    for (const line of this.stalePresence) {
      const run = this.runs.get(line);
      if (run) this.drawPresenceLine(line, run);
    }
    this.stalePresence.clear();
    if (stick) this.scrollToBottom();
  }

  /**
   * The line's text, the classes of the effects in it and, for tests and
   * tools, data-presence = JSON {effect: [names]} with every name (the text
   * names at most three per effect).
   */
  private drawPresenceLine(line: HTMLElement, run: PresenceRun): void {
    const groups = run.groups();
    line.textContent = run.text(3, this.d.locale.t.presence);
    line.className = ["event", "presence", ...groups.map((g) => g.effect)].join(" ");
    line.dataset.presence = JSON.stringify(Object.fromEntries(groups.map((g) => [g.effect, g.names])));
    line.dataset.events = String(run.events);
  }

  // ---------------------------------------------------------------- language, keyboard

  /** Redraws every word in the list (the language changed, or a new day made "Today" yesterday). */
  relabel(): void {
    const { t, lang } = this.d.locale;
    for (const div of this.list.querySelectorAll<HTMLElement>(":scope > .divider.day")) {
      div.textContent = dayLabel(Number(div.dataset.ms), this.d.now(), lang, t);
    }
    for (const node of this.msgEls.values()) this.fillTime(node, this.items.get(node)?.sentAtMs ?? 0);
    const say = (sel: string, text: string) => {
      const e = this.list.querySelector(sel);
      if (e) e.textContent = text;
    };
    say(":scope > .room-start", t.roomStart);
    say(":scope > .unread", t.unreadLine);
    say(":scope > .loading", t.loadingOlder);
    for (const line of this.presenceLines) {
      const run = this.runs.get(line);
      if (run) this.drawPresenceLine(line, run);
    }
  }

  /** Arrow keys move between messages (each shows its full time when focused); Home/End jump. */
  private onKey(ev: KeyboardEvent): void {
    const msgs = [...this.list.querySelectorAll<HTMLElement>(":scope > .msg")];
    if (msgs.length === 0) return;
    const at = msgs.indexOf(ev.target as HTMLElement);
    let to = -1;
    if (ev.key === "ArrowUp") to = at < 0 ? msgs.length - 1 : Math.max(0, at - 1);
    else if (ev.key === "ArrowDown") to = at < 0 ? msgs.length - 1 : Math.min(msgs.length - 1, at + 1);
    else if (ev.key === "Home") to = 0;
    else if (ev.key === "End") to = msgs.length - 1;
    if (to < 0) return;
    ev.preventDefault();
    msgs[to]!.focus();
  }
}
