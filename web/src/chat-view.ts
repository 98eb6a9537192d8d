// The chat screen: the room's title and connection state, the member list
// (sorted, with its count), typing notices, the composer, notices, the
// unread count in the title while the page is hidden, notifications for
// mentions, the invite link, and the session that feeds it all. The
// message list itself is timeline-view.ts. User data goes in as text only.

import { byId, el } from "./dom";
import { fragmentForRoom } from "./fragment";
import type { Locale } from "./i18n";
import { mentions } from "./mentions";
import { sameName } from "./names";
import { Throttle } from "./presence";
import { type ChatSession, type ConnState, type SessionListener } from "./session";
import { TimelineView, PRESENCE_REDRAW_MS } from "./timeline-view";
import { Unread } from "./unread";

export interface ChatDeps {
  doc: Document;
  win: Window;
  locale: Locale;
  /** Builds the session for a name and room, with this view as its listener. */
  makeSession(username: string, room: string, listener: SessionListener): ChatSession;
  /** The first Joined: the person is in the room (remember it for a reload). */
  onEntered(username: string, room: string): void;
  /** The session could not enter the room: back to the entry screen with this error. */
  onEntryError(text: string): void;
  /** The person left, or the session stopped for good after joining. */
  onLeft(): void;
  /** This tab no longer owns the chat (fatal error, or another tab took over). */
  onGone(): void;
  /** The signed token was refused or expired: ask for a new one. */
  onTokenRefused?(): void;
}

export class ChatView {
  private readonly root: HTMLElement;
  private readonly roomTitle: HTMLElement;
  private readonly connState: HTMLElement;
  private readonly membersToggle: HTMLButtonElement;
  private readonly memberCount: HTMLElement;
  private readonly membersTotal: HTMLElement;
  private readonly membersPanel: HTMLElement;
  private readonly membersHeading: HTMLElement;
  private readonly membersList: HTMLUListElement;
  private readonly typingEl: HTMLElement;
  private readonly announcer: HTMLElement;
  private readonly noticeEl: HTMLElement;
  private readonly replacedEl: HTMLElement;
  private readonly input: HTMLInputElement;
  private readonly settingsButton: HTMLButtonElement;
  private readonly settingsPanel: HTMLElement;
  private readonly notifyButton: HTMLButtonElement;
  readonly timeline: TimelineView;

  private session: ChatSession | null = null;
  private room = "";
  private readonly unread = new Unread();
  private noticeTimer: ReturnType<typeof setTimeout> | null = null;
  private typers: string[] = [];
  /** The member list to draw next (drawn at most every PRESENCE_REDRAW_MS). */
  private membersToDraw: readonly string[] | null = null;
  private readonly membersRedraw: Throttle;
  /** Polite announcements of new messages, a few at a time. */
  private announceQueue: string[] = [];
  private readonly announceFlush: Throttle;

  constructor(private readonly d: ChatDeps) {
    const doc = d.doc;
    this.root = byId(doc, "chat");
    this.roomTitle = byId(doc, "room-title");
    this.connState = byId(doc, "conn-state");
    this.membersToggle = byId<HTMLButtonElement>(doc, "members-toggle");
    this.memberCount = byId(doc, "member-count");
    this.membersTotal = byId(doc, "members-total");
    this.membersPanel = byId(doc, "members-panel");
    this.membersHeading = byId(doc, "members-heading");
    this.membersList = byId<HTMLUListElement>(doc, "members");
    this.typingEl = byId(doc, "typing");
    this.announcer = byId(doc, "announcer");
    this.noticeEl = byId(doc, "notice");
    this.replacedEl = byId(doc, "replaced");
    this.input = byId<HTMLInputElement>(doc, "input");
    this.settingsButton = byId<HTMLButtonElement>(doc, "settings");
    this.settingsPanel = byId(doc, "settings-panel");
    this.notifyButton = byId<HTMLButtonElement>(doc, "notify");
    this.timeline = new TimelineView({
      doc,
      locale: d.locale,
      me: () => this.session?.me ?? "",
      fetchOlder: () => this.fetchOlder(),
      hasOlder: () => this.session?.hasOlder ?? false,
      now: () => Date.now(),
    });
    this.membersRedraw = new Throttle(() => {
      if (this.membersToDraw) this.renderMembers(this.membersToDraw);
    }, PRESENCE_REDRAW_MS);
    this.announceFlush = new Throttle(() => this.announce(), 1000);
    this.wire();
    d.locale.onChange(() => this.relabel());
  }

  get active(): ChatSession | null {
    return this.session;
  }

  /** Starts a session for `username` in `room`; the screen shows once it has joined. */
  start(username: string, room: string): void {
    this.reset();
    this.setConnState("connecting");
    const s: ChatSession = this.d.makeSession(username, room, this.listenerFor(() => s));
    this.session = s;
    this.room = s.room;
    s.start();
  }

  /** Leaves the room (the Leave button). */
  leave(): void {
    const s = this.session;
    this.session = null;
    s?.leave();
    this.reset();
    this.hide();
    this.d.onLeft();
  }

  hide(): void {
    this.root.hidden = true;
    this.d.doc.title = this.d.locale.t.appName;
  }

  /** The page became hidden or visible (visibilitychange). */
  setHidden(hidden: boolean): void {
    this.unread.setHidden(hidden);
    this.showTitle();
    // Back after a while: "Today" may have become yesterday.
    if (!hidden && this.session) this.timeline.relabel();
  }

  private show(room: string): void {
    this.root.hidden = false;
    this.roomTitle.textContent = room;
    this.showTitle();
    this.input.value = "";
    this.input.focus();
  }

  private showTitle(): void {
    if (!this.session || this.root.hidden) return;
    this.d.doc.title = this.unread.title(this.room);
  }

  private reset(): void {
    this.timeline.reset();
    this.membersList.replaceChildren();
    this.memberCount.textContent = "0";
    this.membersTotal.textContent = "0";
    this.membersToDraw = null;
    this.membersRedraw.cancel();
    this.renderTyping([]);
    this.noticeEl.hidden = true;
    this.replacedEl.hidden = true;
    this.input.disabled = false;
    this.announceQueue = [];
    this.announcer.textContent = "";
    this.closeMembers(false);
    this.closeSettings(false);
  }

  // ---------------------------------------------------------------- session events

  private listenerFor(self: () => ChatSession): SessionListener {
    const mine = () => this.session === self();
    return {
      onState: (st) => {
        if (mine()) this.setConnState(st);
      },
      onWelcome: (_name, info) => {
        if (mine()) this.showGateway(info.gatewayId);
      },
      onJoined: (info) => {
        if (!mine()) return;
        const s = self();
        if (info.first) {
          this.d.onEntered(s.username, info.room);
          this.show(info.room);
        }
        this.renderMembers(info.members);
        // A page asked for on the connection that was lost will not come: ask again.
        if (!info.first) this.timeline.olderDone(s.hasOlder, null, true);
        queueMicrotask(() => this.timeline.maybeLoadOlder());
      },
      onMembers: (members) => {
        if (!mine()) return;
        this.membersToDraw = members;
        this.membersRedraw.request();
      },
      onPresence: (name, kind) => {
        if (mine()) this.timeline.addPresence(name, kind);
      },
      onMessage: (m, index, origin) => {
        if (!mine()) return;
        const next = self().timeline[index + 1];
        this.timeline.insertConfirmed(m, next ? next.id : null, origin === "older");
        if (origin === "older") return;
        if (this.unread.onMessage(m.id, m.own)) this.timeline.markUnread(m.id);
        this.showTitle();
        // Only pushes are news: not the replay of a Joined (the history), not an Ack.
        if (origin === "stream" && !m.own && !m.system) {
          this.queueAnnouncement(`${m.username}: ${m.text}`);
          if (mentions(m.text, self().me)) this.notifyMention(m.username, m.text);
        }
      },
      onOlder: (info) => {
        if (mine()) this.timeline.olderDone(info.hasMore, this.olderAnchor, info.failed);
        this.olderAnchor = null;
      },
      onPending: (p) => {
        if (!mine()) return;
        this.timeline.upsertPending(p, self().me);
        if (p.error) this.showNotice(p.error);
      },
      onPendingResolved: (clientMsgId) => {
        if (mine()) this.timeline.resolvePending(clientMsgId);
      },
      onTyping: (names) => {
        if (mine()) this.renderTyping(names);
      },
      onNotice: (text) => {
        if (mine()) this.showNotice(text);
      },
      onTokenRefused: () => {
        if (mine()) this.d.onTokenRefused?.();
      },
      onEntryError: (_code, text) => {
        if (!mine()) return;
        this.session = null;
        this.d.onEntryError(text);
      },
      onFatal: (text) => {
        if (!mine()) return;
        this.d.onGone();
        this.timeline.addEventLine(text, "fatal");
        this.showNotice(text);
        this.input.disabled = true;
        this.setConnState("offline");
      },
      onReplaced: (text) => {
        // Another tab or window took this chat over: say so, for as long as this page is open.
        if (!mine()) return;
        this.d.onGone();
        this.noticeEl.hidden = true;
        this.replacedEl.textContent = text;
        this.replacedEl.hidden = false;
        this.input.disabled = true;
        this.setConnState("offline");
      },
    };
  }

  /** Where the reading position was when an older page was asked for. */
  private olderAnchor: { el: HTMLElement; top: number } | null = null;

  private fetchOlder(): boolean {
    const s = this.session;
    if (!s) return false;
    const anchor = this.timeline.anchor();
    if (!s.fetchOlder()) return false;
    this.olderAnchor = anchor;
    return true;
  }

  // ---------------------------------------------------------------- drawing

  private setConnState(state: ConnState): void {
    // Away and the browser knows it has no network: say so.
    const s: ConnState = state === "reconnecting" && !this.d.win.navigator.onLine ? "offline" : state;
    this.connState.textContent = this.d.locale.t.connState[s];
    this.connState.dataset.state = s;
    this.root.dataset.conn = s;
    this.showGateway(this.session?.gatewayId ?? "");
  }

  /** Which gateway holds the connection (Welcome.gateway_id), for operators and tests. */
  private showGateway(gatewayId: string): void {
    if (gatewayId) this.connState.dataset.gateway = gatewayId;
    else delete this.connState.dataset.gateway;
    this.connState.title = gatewayId ? this.d.locale.t.gateway(gatewayId) : "";
  }

  /** Draws the member list (sorted by the session) and its count now. */
  private renderMembers(members: readonly string[]): void {
    this.membersToDraw = null;
    this.membersRedraw.cancel();
    const t = this.d.locale.t;
    const me = this.session?.me ?? "";
    this.membersList.replaceChildren(
      ...members.map((m) => {
        const li = el(this.d.doc, "li", "member", m);
        li.dataset.name = m;
        if (sameName(m, me)) {
          li.classList.add("me");
          li.dataset.you = t.you; // shown by CSS, so the item's text stays the name
        }
        return li;
      }),
    );
    const count = String(members.length);
    this.memberCount.textContent = count;
    this.membersTotal.textContent = count;
    this.membersTotal.title = t.members(members.length);
    // Its name is what it shows ("Members 3", the word for screen readers only); the title says more.
    this.membersToggle.title = t.showMembers(members.length);
  }

  private renderTyping(names: string[]): void {
    this.typers = names;
    const t = this.d.locale.t;
    let text = "";
    if (names.length === 1) text = t.typingOne(names[0]!);
    else if (names.length === 2) text = t.typingTwo(names[0]!, names[1]!);
    else if (names.length > 2) text = t.typingMany(names.length);
    this.typingEl.textContent = text;
    this.typingEl.classList.toggle("active", text !== "");
  }

  showNotice(text: string): void {
    this.noticeEl.textContent = text;
    this.noticeEl.hidden = false;
    if (this.noticeTimer) clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => {
      this.noticeEl.hidden = true;
      this.noticeTimer = null;
    }, 6000);
  }

  /** New messages from others are read out politely, a few lines at a time, never the history. */
  private queueAnnouncement(text: string): void {
    this.announceQueue.push(text);
    if (this.announceQueue.length > 5) this.announceQueue.shift();
    this.announceFlush.request();
  }

  private announce(): void {
    const lines = this.announceQueue.splice(0);
    if (lines.length === 0) return;
    this.announcer.replaceChildren(...lines.map((l) => el(this.d.doc, "p", "", l)));
  }

  private notifyMention(author: string, text: string): void {
    const N = (this.d.win as unknown as { Notification?: typeof Notification }).Notification;
    if (!N || N.permission !== "granted" || !this.unread.isHidden) return;
    try {
      const n = new N(this.d.locale.t.mentionedYou(author, this.room), { body: text, tag: `chat:${this.room}` });
      n.onclick = () => {
        this.d.win.focus();
        n.close();
      };
    } catch {
      /* some browsers only allow notifications from a service worker */
    }
  }

  private relabel(): void {
    const s = this.session;
    if (s) this.setConnState(s.connState);
    if (this.membersList.childElementCount || s) this.renderMembers(s?.members ?? []);
    this.renderTyping(this.typers);
    this.showNotifyButton();
  }

  // ---------------------------------------------------------------- controls

  private wire(): void {
    const doc = this.d.doc;
    byId<HTMLFormElement>(doc, "composer").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const s = this.session;
      if (!s || s.isStopped) return;
      const text = this.input.value;
      if (!text.trim()) return;
      if (s.send(text) !== null) this.input.value = "";
    });
    this.input.addEventListener("input", () => {
      if (!this.session) return;
      if (this.input.value.trim() === "") this.session.stopTyping();
      else this.session.userTyping();
    });
    this.input.addEventListener("keydown", (ev) => {
      // Enter sends (via the form); Escape clears.
      if (ev.key === "Escape") {
        this.input.value = "";
        this.session?.stopTyping();
      }
    });
    byId(doc, "leave").addEventListener("click", () => this.leave());
    byId(doc, "invite").addEventListener("click", () => void this.copyInvite());
    this.membersToggle.addEventListener("click", () => {
      if (this.membersPanel.classList.contains("open")) this.closeMembers(true);
      else this.openMembers();
    });
    this.settingsButton.addEventListener("click", () => {
      if (this.settingsPanel.hidden) this.openSettings();
      else this.closeSettings(true);
    });
    this.notifyButton.addEventListener("click", () => void this.askNotifications());
    // Escape closes the member panel or the settings, and gives focus back to their button.
    this.root.addEventListener("keydown", (ev) => {
      if (ev.key !== "Escape") return;
      if (this.membersPanel.classList.contains("open")) {
        this.closeMembers(true);
        ev.preventDefault();
      } else if (!this.settingsPanel.hidden) {
        this.closeSettings(true);
        ev.preventDefault();
      } else if (ev.target instanceof HTMLElement && ev.target.closest("#messages")) {
        this.input.focus();
      }
    });
    // A message that could not be sent is dismissed with a click; a click beside
    // the (phone-sized, overlaid) member list closes it.
    this.timeline.list.addEventListener("click", (ev) => {
      if (this.membersPanel.classList.contains("open")) this.closeMembers(false);
      this.timeline.dismissFailed(ev.target);
    });
    this.d.win.addEventListener("online", () => {
      if (!this.session) return;
      this.setConnState(this.session.connState);
      this.session.retryNow();
    });
    this.d.win.addEventListener("offline", () => {
      if (this.session) this.setConnState(this.session.connState);
    });
  }

  private openMembers(): void {
    this.membersPanel.classList.add("open");
    this.membersToggle.setAttribute("aria-expanded", "true");
    // On a phone the panel covers the messages: take focus there.
    if (this.d.win.getComputedStyle(this.membersToggle).display !== "none") this.membersHeading.focus();
  }

  private closeMembers(refocus: boolean): void {
    const wasOpen = this.membersPanel.classList.contains("open");
    this.membersPanel.classList.remove("open");
    this.membersToggle.setAttribute("aria-expanded", "false");
    if (wasOpen && refocus) this.membersToggle.focus();
  }

  private openSettings(): void {
    // The one language and theme switch moves here from the entry screen.
    const prefs = byId(this.d.doc, "prefs");
    this.settingsPanel.prepend(prefs);
    this.showNotifyButton();
    this.settingsPanel.hidden = false;
    this.settingsButton.setAttribute("aria-expanded", "true");
    byId(this.d.doc, "language").focus();
  }

  private closeSettings(refocus: boolean): void {
    const wasOpen = !this.settingsPanel.hidden;
    this.settingsPanel.hidden = true;
    this.settingsButton.setAttribute("aria-expanded", "false");
    byId(this.d.doc, "prefs-home").append(byId(this.d.doc, "prefs"));
    if (wasOpen && refocus) this.settingsButton.focus();
  }

  private showNotifyButton(): void {
    const N = (this.d.win as unknown as { Notification?: typeof Notification }).Notification;
    this.notifyButton.hidden = !N || N.permission !== "default";
  }

  private async askNotifications(): Promise<void> {
    const N = (this.d.win as unknown as { Notification?: typeof Notification }).Notification;
    if (!N) return;
    const answer = await N.requestPermission();
    this.showNotifyButton();
    if (answer === "granted") this.showNotice(this.d.locale.t.notificationsOn);
  }

  /** The page's address with #room=NAME: copied, or shown when the clipboard is not available. */
  inviteUrl(): string {
    const loc = this.d.win.location;
    return `${loc.origin}${loc.pathname}${fragmentForRoom(this.room)}`;
  }

  private async copyInvite(): Promise<void> {
    const url = this.inviteUrl();
    const t = this.d.locale.t;
    try {
      await this.d.win.navigator.clipboard.writeText(url);
      this.showNotice(t.inviteCopied);
    } catch {
      this.showNotice(t.inviteCopyFailed(url));
    }
    byId(this.d.doc, "invite").dataset.url = url;
  }
}
