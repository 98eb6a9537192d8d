// Browser entry point: the entry screen and the chat screen. All user data is
// put into the page with textContent / attributes, never as HTML.

import { roomFromFragment } from "./fragment";
import { type PresenceKind, PresenceRun, Throttle } from "./presence";
import { type ConnState, type DisplayMessage, type PendingMessage, ChatSession, tabStorage } from "./session";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
};

const entry = $("entry");
const entryForm = $<HTMLFormElement>("entry-form");
const usernameInput = $<HTMLInputElement>("username");
const roomInput = $<HTMLInputElement>("room");
const roomOptions = $<HTMLDataListElement>("room-options");
const roomsList = $<HTMLUListElement>("rooms");
const roomsEmpty = $("rooms-empty");
const entryError = $("entry-error");
const joinButton = $<HTMLButtonElement>("join");

const chat = $("chat");
const roomTitle = $("room-title");
const connState = $("conn-state");
const leaveButton = $<HTMLButtonElement>("leave");
const membersToggle = $<HTMLButtonElement>("members-toggle");
const memberCount = $("member-count");
const membersTotal = $("members-total");
const membersPanel = $("members-panel");
const membersList = $<HTMLUListElement>("members");
const messagesEl = $("messages");
const typingEl = $("typing");
const noticeEl = $("notice");
const replacedEl = $("replaced");
const composer = $<HTMLFormElement>("composer");
const input = $<HTMLInputElement>("input");

const STORAGE_NAME = "chat.username";
const STORAGE_ROOM = "chat.room";
/** sessionStorage: the name and room this tab is chatting in, so that a reload goes back in. */
const TAB_ROOM = "chat.tab";
const tab = tabStorage();
/** Older presence lines are dropped beyond this many: a flood never grows the page. */
const MAX_PRESENCE_LINES = 50;
/** Presence lines and the member list are redrawn at most this often during a flood. */
const PRESENCE_REDRAW_MS = 100;

let session: ChatSession | null = null;
/** Confirmed message elements by id. */
let msgEls = new Map<string, HTMLElement>();
/** Pending message elements by client_msg_id. */
let pendingEls = new Map<string, HTMLElement>();
/** The presence line that the next join/leave goes into, while nothing came after it. */
let presenceRun: { run: PresenceRun; line: HTMLElement } | null = null;
/** Presence lines in the timeline, oldest first (at most MAX_PRESENCE_LINES). */
let presenceLines: HTMLElement[] = [];
/** Presence lines whose text is behind their run. */
let stalePresence = new Map<HTMLElement, PresenceRun>();
/** The member list to draw next (drawn at most every PRESENCE_REDRAW_MS). */
let membersToDraw: { members: readonly string[]; me: string } | null = null;
let roomsTimer: ReturnType<typeof setInterval> | null = null;
let noticeTimer: ReturnType<typeof setTimeout> | null = null;

// ------------------------------------------------------------------ helpers

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function wsUrl(): string {
  const u = new URL("/ws", location.href);
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return u.toString();
}

function formatTime(ms: number): string {
  if (!ms) return "";
  const d = new Date(ms);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return sameDay ? time : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

function nearBottom(): boolean {
  return messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 80;
}

function scrollToBottom(): void {
  messagesEl.scrollTop = messagesEl.scrollHeight;
}

function showNotice(text: string): void {
  noticeEl.textContent = text;
  noticeEl.hidden = false;
  if (noticeTimer) clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    noticeEl.hidden = true;
    noticeTimer = null;
  }, 6000);
}

/** Remembers (or, with null, forgets) which room this tab is in, for a reload. */
function rememberTabRoom(where: { username: string; room: string } | null): void {
  try {
    if (where) tab?.setItem(TAB_ROOM, JSON.stringify(where));
    else tab?.removeItem(TAB_ROOM);
  } catch {
    /* storage blocked or full: a reload shows the entry screen */
  }
}

function tabRoom(): { username: string; room: string } | null {
  try {
    const v: unknown = JSON.parse(tab?.getItem(TAB_ROOM) ?? "null");
    const { username, room } = (v ?? {}) as { username?: unknown; room?: unknown };
    return typeof username === "string" && typeof room === "string" ? { username, room } : null;
  } catch {
    return null;
  }
}

// ------------------------------------------------------------------ entry screen

function showEntry(error?: string): void {
  chat.hidden = true;
  entry.hidden = false;
  document.title = "Chat";
  joinButton.disabled = false;
  joinButton.textContent = "Join";
  setEntryError(error ?? "");
  refreshRooms();
  if (roomsTimer) clearInterval(roomsTimer);
  roomsTimer = setInterval(refreshRooms, 5000);
  (usernameInput.value ? roomInput : usernameInput).focus();
}

function setEntryError(text: string): void {
  entryError.textContent = text;
  entryError.hidden = text === "";
}

interface RoomInfo {
  name: string;
  members: number;
}

async function refreshRooms(): Promise<void> {
  let rooms: RoomInfo[] = [];
  try {
    const res = await fetch("/api/rooms", { cache: "no-store" });
    if (!res.ok) return;
    const body = (await res.json()) as { rooms?: unknown };
    if (Array.isArray(body.rooms)) {
      rooms = body.rooms
        .filter((r): r is RoomInfo => typeof r?.name === "string")
        .map((r) => ({ name: r.name, members: Number(r.members) || 0 }));
    }
  } catch {
    return;
  }
  rooms.sort((a, b) => b.members - a.members || a.name.localeCompare(b.name));
  roomOptions.replaceChildren(
    ...rooms.map((r) => {
      const o = el("option");
      o.value = r.name;
      o.label = `${r.members} ${r.members === 1 ? "person" : "people"}`;
      return o;
    }),
  );
  roomsList.replaceChildren(
    ...rooms.map((r) => {
      const li = el("li");
      const b = el("button", "room-chip");
      b.type = "button";
      b.dataset.room = r.name;
      b.append(el("span", "room-name", r.name), el("span", "room-count", String(r.members)));
      b.title = `${r.name} — ${r.members} ${r.members === 1 ? "person" : "people"}`;
      b.addEventListener("click", () => {
        roomInput.value = r.name;
        if (usernameInput.value.trim()) entryForm.requestSubmit();
        else usernameInput.focus();
      });
      li.append(b);
      return li;
    }),
  );
  roomsEmpty.hidden = rooms.length > 0;
}

entryForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (session) return;
  const username = usernameInput.value.trim();
  const room = roomInput.value;
  if (!username) {
    setEntryError("Please enter a display name.");
    usernameInput.focus();
    return;
  }
  if (!room.trim()) {
    setEntryError("Please enter a room name.");
    roomInput.focus();
    return;
  }
  if (room !== room.trim()) {
    setEntryError("Room names cannot start or end with spaces.");
    roomInput.focus();
    return;
  }
  setEntryError("");
  joinButton.disabled = true;
  joinButton.textContent = "Joining…";
  startSession(username, room);
});

// ------------------------------------------------------------------ chat screen

function setConnState(state: ConnState): void {
  // Away and the browser knows it has no network: say so.
  const s: ConnState = state === "reconnecting" && !navigator.onLine ? "offline" : state;
  const text = s === "connected" ? "connected" : s === "reconnecting" ? "reconnecting…" : s === "offline" ? "offline" : "connecting…";
  connState.textContent = text;
  connState.dataset.state = s;
  chat.dataset.conn = s;
  showGateway(session?.gatewayId ?? "");
}

/** Which gateway holds the connection (Welcome.gateway_id), for operators and tests. */
function showGateway(gatewayId: string): void {
  if (gatewayId) connState.dataset.gateway = gatewayId;
  else delete connState.dataset.gateway;
  connState.title = gatewayId ? `gateway ${gatewayId}` : "";
}

/** Draws the member list (sorted by the session) and its count now. */
function renderMembers(members: readonly string[], me: string): void {
  membersToDraw = null;
  membersRedraw.cancel();
  const meKey = me.normalize("NFC").toLowerCase();
  membersList.replaceChildren(
    ...members.map((m) => {
      const li = el("li", "member", m);
      li.dataset.name = m;
      if (m.normalize("NFC").toLowerCase() === meKey) li.classList.add("me");
      return li;
    }),
  );
  const count = String(members.length);
  memberCount.textContent = count;
  membersTotal.textContent = count;
  const label = `${members.length} ${members.length === 1 ? "member" : "members"}`;
  membersTotal.title = label;
  membersToggle.title = `Show members (${label})`;
}

/** Draws the member list soon: at once when idle, at most every PRESENCE_REDRAW_MS in a flood. */
function scheduleMembers(members: readonly string[], me: string): void {
  membersToDraw = { members, me };
  membersRedraw.request();
}

const membersRedraw = new Throttle(() => {
  if (membersToDraw) renderMembers(membersToDraw.members, membersToDraw.me);
}, PRESENCE_REDRAW_MS);

function renderTyping(names: string[]): void {
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names.length} people are typing…`;
  typingEl.textContent = text;
  typingEl.classList.toggle("active", text !== "");
}

function messageElement(m: { username: string; text: string; system?: boolean; own?: boolean }): HTMLElement {
  const root = el("div", "msg");
  if (m.own) root.classList.add("own");
  if (m.system) root.classList.add("system");
  const meta = el("div", "meta");
  const author = el("span", "author", m.system ? m.username || "system" : m.username);
  const time = el("time", "time");
  meta.append(author, time);
  const text = el("div", "text", m.text);
  root.append(meta, text);
  return root;
}

/** The element that a confirmed element or event line goes before: the first pending one. */
function firstPending(): Element | null {
  return messagesEl.querySelector(":scope > .msg.pending, :scope > .msg.failed");
}

function insertConfirmed(m: DisplayMessage, index: number): void {
  const stick = nearBottom() || m.own;
  const node = messageElement(m);
  node.dataset.id = m.id;
  const time = node.querySelector("time")!;
  time.textContent = formatTime(m.sentAtMs);
  if (m.sentAtMs) {
    const d = new Date(m.sentAtMs);
    time.dateTime = d.toISOString();
    time.title = d.toLocaleString();
  }
  const timeline = session?.timeline ?? [];
  const next = timeline[index + 1];
  const before = next ? msgEls.get(next.id) ?? null : firstPending();
  messagesEl.insertBefore(node, before);
  msgEls.set(m.id, node);
  if (stick) scrollToBottom();
}

function upsertPending(p: PendingMessage): void {
  let node = pendingEls.get(p.clientMsgId);
  if (!node) {
    node = messageElement({ username: session?.me ?? "", text: p.text, own: true });
    node.dataset.clientId = p.clientMsgId;
    messagesEl.append(node);
    pendingEls.set(p.clientMsgId, node);
    scrollToBottom();
  }
  node.classList.toggle("pending", p.status === "pending");
  node.classList.toggle("failed", p.status === "failed");
  const time = node.querySelector("time")!;
  time.textContent = p.status === "failed" ? "not sent · tap to dismiss" : "sending…";
  if (p.error) {
    node.title = p.error;
    showNotice(p.error);
  }
}

function resolvePending(clientMsgId: string): void {
  pendingEls.get(clientMsgId)?.remove();
  pendingEls.delete(clientMsgId);
}

function addEventLine(text: string, kind: string): void {
  const stick = nearBottom();
  const line = el("div", `event ${kind}`, text);
  messagesEl.insertBefore(line, firstPending());
  if (stick) scrollToBottom();
}

/** True while nothing but unconfirmed messages of one's own follows `line`. */
function isLastLine(line: HTMLElement): boolean {
  if (line.parentElement !== messagesEl) return false;
  let next = line.nextElementSibling;
  while (next && next.matches(".msg.pending, .msg.failed")) next = next.nextElementSibling;
  return next === null;
}

/**
 * A join or leave. Consecutive ones share one line (PresenceRun), so a flood
 * adds one element, redrawn at most every PRESENCE_REDRAW_MS; a message (or
 * any other line) after it starts the next run. At most MAX_PRESENCE_LINES
 * presence lines are kept, the oldest go.
 */
function addPresence(name: string, kind: PresenceKind): void {
  if (presenceRun && isLastLine(presenceRun.line)) {
    presenceRun.run.add(name, kind);
    stalePresence.set(presenceRun.line, presenceRun.run);
    presenceRedraw.request();
    return;
  }
  const stick = nearBottom();
  const line = el("div", "event presence");
  line.setAttribute("data-testid", "presence");
  const run = new PresenceRun();
  run.add(name, kind);
  drawPresenceLine(line, run);
  messagesEl.insertBefore(line, firstPending());
  presenceRun = { run, line };
  presenceLines.push(line);
  while (presenceLines.length > MAX_PRESENCE_LINES) {
    const old = presenceLines.shift()!;
    stalePresence.delete(old);
    old.remove();
  }
  if (stick) scrollToBottom();
}

/**
 * Brings presence lines up to date: the text, the classes of the effects in
 * it and, for tests and tools, data-presence = JSON {effect: [names]} with
 * every name (the text names at most three per effect).
 */
function drawPresence(): void {
  if (stalePresence.size === 0) return;
  const stick = nearBottom();
  for (const [line, run] of stalePresence) drawPresenceLine(line, run);
  stalePresence.clear();
  if (stick) scrollToBottom();
}

function drawPresenceLine(line: HTMLElement, run: PresenceRun): void {
  const groups = run.groups();
  line.textContent = run.text();
  line.className = ["event", "presence", ...groups.map((g) => g.effect)].join(" ");
  line.dataset.presence = JSON.stringify(Object.fromEntries(groups.map((g) => [g.effect, g.names])));
  line.dataset.events = String(run.events);
}

const presenceRedraw = new Throttle(drawPresence, PRESENCE_REDRAW_MS);

function showChat(room: string): void {
  if (roomsTimer) clearInterval(roomsTimer);
  roomsTimer = null;
  entry.hidden = true;
  chat.hidden = false;
  roomTitle.textContent = room;
  document.title = `${room} · Chat`;
  input.value = "";
  input.focus();
}

function resetChat(): void {
  messagesEl.replaceChildren();
  membersList.replaceChildren();
  memberCount.textContent = "0";
  membersTotal.textContent = "0";
  presenceRun = null;
  presenceLines = [];
  stalePresence = new Map();
  presenceRedraw.cancel();
  membersToDraw = null;
  membersRedraw.cancel();
  msgEls = new Map();
  pendingEls = new Map();
  renderTyping([]);
  noticeEl.hidden = true;
  replacedEl.hidden = true;
  input.disabled = false;
  membersPanel.classList.remove("open");
  membersToggle.setAttribute("aria-expanded", "false");
}

function startSession(username: string, room: string): void {
  resetChat();
  setConnState("connecting");
  const s: ChatSession = new ChatSession({
    url: wsUrl(),
    username,
    room,
    storage: tab,
    listener: {
      onState: setConnState,
      onWelcome(_name, info) {
        if (session === s) showGateway(info.gatewayId);
      },
      onJoined(info) {
        if (session !== s) return;
        if (info.first) {
          localStorage.setItem(STORAGE_NAME, username);
          localStorage.setItem(STORAGE_ROOM, room);
          rememberTabRoom({ username, room });
          showChat(info.room);
        }
        renderMembers(info.members, s.me);
      },
      onMembers(members) {
        if (session === s) scheduleMembers(members, s.me);
      },
      onPresence(name, kind) {
        if (session === s) addPresence(name, kind);
      },
      onMessage(m, index) {
        if (session === s) insertConfirmed(m, index);
      },
      onPending(p) {
        if (session === s) upsertPending(p);
      },
      onPendingResolved(clientMsgId) {
        if (session === s) resolvePending(clientMsgId);
      },
      onTyping(names) {
        if (session === s) renderTyping(names);
      },
      onNotice(text) {
        if (session === s) showNotice(text);
      },
      onEntryError(_code, text) {
        if (session !== s) return;
        session = null;
        rememberTabRoom(null);
        showEntry(text);
      },
      onFatal(text) {
        if (session !== s) return;
        rememberTabRoom(null);
        addEventLine(text, "fatal");
        showNotice(text);
        input.disabled = true;
        setConnState("offline");
      },
      onReplaced(text) {
        // Another tab or window took this chat over: say so, for as long as this page is open.
        if (session !== s) return;
        rememberTabRoom(null);
        noticeEl.hidden = true;
        replacedEl.textContent = text;
        replacedEl.hidden = false;
        input.disabled = true;
        setConnState("offline");
      },
    },
  });
  session = s;
  s.start();
}

composer.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (!session || session.isStopped) return;
  const text = input.value;
  if (!text.trim()) return;
  if (session.send(text) !== null) input.value = "";
});

input.addEventListener("input", () => {
  if (!session) return;
  if (input.value.trim() === "") session.stopTyping();
  else session.userTyping();
});

input.addEventListener("keydown", (ev) => {
  // Enter sends (via the form); Escape clears.
  if (ev.key === "Escape") {
    input.value = "";
    session?.stopTyping();
  }
});

leaveButton.addEventListener("click", () => {
  const s = session;
  session = null;
  s?.leave();
  rememberTabRoom(null);
  resetChat();
  showEntry();
});

membersToggle.addEventListener("click", () => {
  const open = membersPanel.classList.toggle("open");
  membersToggle.setAttribute("aria-expanded", String(open));
});

window.addEventListener("online", () => {
  if (!session) return;
  setConnState(session.connState);
  session.retryNow();
});
window.addEventListener("offline", () => {
  if (session) setConnState(session.connState);
});

// A message that could not be sent is dismissed with a click; a click beside
// the (phone-sized, overlaid) member list closes it.
messagesEl.addEventListener("click", (ev) => {
  if (membersPanel.classList.contains("open")) {
    membersPanel.classList.remove("open");
    membersToggle.setAttribute("aria-expanded", "false");
  }
  const target = (ev.target as Element | null)?.closest(".msg.failed");
  if (target instanceof HTMLElement && target.dataset.clientId) resolvePending(target.dataset.clientId);
});

// ------------------------------------------------------------------ boot

// After a reload the tab goes back into its room under the same name: the
// session's resume token (in this tab's sessionStorage) takes the name over
// from the connection the reload left behind.
const back = tabRoom();
usernameInput.value = back?.username ?? localStorage.getItem(STORAGE_NAME) ?? "";
// The fragment may name a room (#room=NAME or #NAME); a malformed one is ignored.
const fromHash = roomFromFragment(location.hash);
roomInput.value = back?.room ?? (fromHash || localStorage.getItem(STORAGE_ROOM) || "lobby");
showEntry();
if (back) entryForm.requestSubmit();
