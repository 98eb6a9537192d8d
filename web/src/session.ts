// One chat session: a WebSocket connection to /ws that says Hello, joins one
// room, and keeps that room's timeline correct across disconnects.
//
// Everything that touches the outside world is injected (socket factory,
// timers, clock, randomness, uuid, storage) so that tests can drive the class
// directly.
//
// Reconnection rules:
// - Every Welcome carries a resume token, the secret for this client's next
//   session. The session keeps the latest one in memory and in the injected
//   storage (in the browser the tab's sessionStorage: it survives a reload and
//   is not shared with other tabs), under "chat.resume" together with the
//   name it was issued for. Every Hello for that same name carries it: on
//   each reconnect, and from a new session after a page reload. The server
//   then hands the name over at once, even while the earlier connection is
//   still open or its gateway has just died, and the other members see no
//   one leave and come back. A token is never sent for another name.
// - On an unexpected disconnect (network error, server close) the first
//   retry goes out at once, after 0-100 ms of jitter. Only consecutive
//   failures back off, exponentially with full jitter (the n-th failure in a
//   row waits random() * min(cap, base * 2^(n-1))); the count starts over
//   once the room is joined again. A Reconnect frame (drain) uses its
//   after_ms instead.
// - On the new connection it sends Hello with the same username, then Join
//   with since_id = the resume point, then re-sends every Send not yet Acked
//   with the same client_msg_id (the server dedupes those).
// - The resume point is the greatest id received through the room's ordered
//   stream (Joined.history and pushed ChatMessages). Messages shown because of
//   an Ack are displayed too, but are not used as the resume point: an Ack may
//   overtake pushes of smaller ids, which must not be skipped on resume.
// - Messages are kept sorted by id pair and deduplicated by id, so replays
//   and duplicates never show twice.
// - USERNAME_TAKEN while resuming (the name held by a session whose token
//   this one does not have) is retried with backoff; close codes 4001 / 4003
//   stop for good.
// - Error SESSION_REPLACED or close code 4002: a newer session of this client
//   (another tab or window that had this tab's token) took over. The session
//   stops for good, forgets the spent token, and says that the chat continued
//   elsewhere; it never reconnects on it.

import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  type ChatMessage,
  ClientFrameSchema,
  ErrorCode,
  PresenceChange_Kind,
  type ServerFrame,
  ServerFrameSchema,
} from "../gen/chat/v1/chat_pb";
import { CLOSE_SESSION_REPLACED, describeError, describeFatalClose } from "./errors";
import { compareIds, maxId } from "./ids";
import { compareNames, withMember, withoutMember } from "./presence";

// ------------------------------------------------------------------ injection

/** The part of the browser WebSocket this class uses. */
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

/** The part of the Web Storage API (sessionStorage) that keeps the resume token. */
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

/** Where the resume token is stored: JSON {username, token}. */
export const RESUME_STORAGE_KEY = "chat.resume";

// ------------------------------------------------------------------ public types

export type ConnState = "connecting" | "connected" | "reconnecting" | "offline";

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

export interface PendingMessage {
  clientMsgId: string;
  text: string;
  status: "pending" | "failed";
  error?: string;
}

export interface JoinedInfo {
  room: string;
  members: string[];
  /** False when this Joined resumes the room after a reconnect. */
  first: boolean;
  historyTruncated: boolean;
}

export interface SessionListener {
  onState?(state: ConnState): void;
  /** Welcome: the accepted name, and which gateway holds this connection. */
  onWelcome?(username: string, info: { gatewayId: string; sessionId: string }): void;
  onJoined?(info: JoinedInfo): void;
  /** A confirmed message was inserted at `index` of the id-sorted list. */
  onMessage?(msg: DisplayMessage, index: number): void;
  /** A message was queued, or its status changed (e.g. failed). */
  onPending?(p: PendingMessage): void;
  /** A queued message is no longer pending (confirmed or dropped). */
  onPendingResolved?(clientMsgId: string, id: string | null): void;
  onMembers?(members: string[]): void;
  onPresence?(username: string, kind: "joined" | "left"): void;
  onTyping?(usernames: string[]): void;
  /** The session could not enter the room (before the first Joined); it has stopped. */
  onEntryError?(code: ErrorCode | null, text: string): void;
  /** The session stopped for good after having joined (kicked, invalid token, ...). */
  onFatal?(text: string): void;
  /**
   * A newer session of this client (another tab or window with this one's
   * resume token) took over after the first Joined; this one has stopped and
   * does not reconnect.
   */
  onReplaced?(text: string): void;
  /** Something worth a transient note to the user. */
  onNotice?(text: string): void;
}

export interface SessionOptions {
  /** WebSocket URL, e.g. wss://host/ws. */
  url: string;
  username: string;
  room: string;
  listener?: SessionListener;
  socketFactory?: (url: string) => SocketLike;
  clock?: Clock;
  uuid?: () => string;
  /** Keeps the resume token across reloads; default the tab's sessionStorage, null for memory only. */
  storage?: StorageLike | null;
  client?: string;
  /** The first retry after a connection that worked waits random() * this. */
  retryJitterMs?: number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** App-level Ping period while joined; 0 disables. */
  pingIntervalMs?: number;
  /** No frame for this long while joined: the connection is presumed dead. */
  deadAfterMs?: number;
  /** Socket not open after this long: retry. */
  openTimeoutMs?: number;
  /** Attempts to reach the server before the first Joined. */
  initialAttempts?: number;
  /** Re-send Typing(active=true) at most this often while typing. */
  typingThrottleMs?: number;
  /** Send Typing(active=false) after this much idle time. */
  typingIdleMs?: number;
  /** Drop a TypingNotice after this long without refresh. */
  typingExpireMs?: number;
}

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

/** Names compare after NFC normalisation and Unicode lowercasing. */
export function sameName(a: string, b: string): boolean {
  return a.trim().normalize("NFC").toLowerCase() === b.trim().normalize("NFC").toLowerCase();
}

const WS_OPEN = 1;

type RefInfo =
  | { kind: "hello" }
  | { kind: "join" }
  | { kind: "send"; clientMsgId: string }
  | { kind: "leave" }
  | { kind: "ping" };

interface OutboxEntry {
  clientMsgId: string;
  text: string;
  retries: number;
  retryTimer: TimerHandle | null;
}

type Kind = NonNullable<MessageInitShape<typeof ClientFrameSchema>["kind"]>;

export class ChatSession {
  readonly url: string;
  readonly room: string;
  readonly username: string;

  private readonly listener: SessionListener;
  private readonly socketFactory: (url: string) => SocketLike;
  private readonly clock: Clock;
  private readonly uuid: () => string;
  private readonly storage: StorageLike | null;
  private readonly client: string;
  private readonly retryJitterMs: number;
  private readonly backoffBaseMs: number;
  private readonly backoffCapMs: number;
  private readonly pingIntervalMs: number;
  private readonly deadAfterMs: number;
  private readonly openTimeoutMs: number;
  private readonly initialAttempts: number;
  private readonly typingThrottleMs: number;
  private readonly typingIdleMs: number;
  private readonly typingExpireMs: number;

  private ws: SocketLike | null = null;
  private nextRef = 1n;
  private refs = new Map<bigint, RefInfo>();
  private state: ConnState = "connecting";
  private stopped = false;
  private everJoined = false;
  private joinedNow = false;
  /** Failed connection attempts in a row; drives the backoff. */
  private attempt = 0;
  private acceptedName = "";
  /** The latest Welcome.resume_token for this name (or the stored one): sent in every Hello. */
  private resumeToken = "";
  /** Welcome.gateway_id of the current connection; empty while not welcomed. */
  private gateway = "";
  private maxTextBytes = 4096;

  private messages: DisplayMessage[] = [];
  private seen = new Set<string>();
  private resumeId = "";
  private outbox = new Map<string, OutboxEntry>();
  private memberList: string[] = [];

  private reconnectTimer: TimerHandle | null = null;
  private helloRetryTimer: TimerHandle | null = null;
  private openTimer: TimerHandle | null = null;
  private pingTimer: TimerHandle | null = null;
  private lastFrameAt = 0;

  private typingActive = false;
  private typingSentAt = 0;
  private typingIdleTimer: TimerHandle | null = null;
  private typers = new Map<string, { name: string; timer: TimerHandle }>();

  /** Delays chosen by the backoff, most recent last (for tests and diagnostics). */
  readonly backoffHistory: number[] = [];

  constructor(opts: SessionOptions) {
    this.url = opts.url;
    // The server names rooms in NFC (Joined.room, ChatMessage.room): so do we.
    this.room = opts.room.normalize("NFC");
    this.username = opts.username;
    this.listener = opts.listener ?? {};
    this.socketFactory =
      opts.socketFactory ?? ((url) => new WebSocket(url) as unknown as SocketLike);
    this.clock = opts.clock ?? realClock;
    this.uuid = opts.uuid ?? (() => crypto.randomUUID());
    this.storage = opts.storage === undefined ? tabStorage() : opts.storage;
    this.client = opts.client ?? "web/0.1";
    this.retryJitterMs = opts.retryJitterMs ?? 100;
    this.backoffBaseMs = opts.backoffBaseMs ?? 250;
    this.backoffCapMs = opts.backoffCapMs ?? 10_000;
    this.pingIntervalMs = opts.pingIntervalMs ?? 20_000;
    this.deadAfterMs = opts.deadAfterMs ?? 50_000;
    this.openTimeoutMs = opts.openTimeoutMs ?? 10_000;
    this.initialAttempts = opts.initialAttempts ?? 3;
    this.typingThrottleMs = opts.typingThrottleMs ?? 3_000;
    this.typingIdleMs = opts.typingIdleMs ?? 4_000;
    this.typingExpireMs = opts.typingExpireMs ?? 5_000;
    // After a reload: the token of this tab's previous session, if it had this name.
    this.resumeToken = this.storedToken();
  }

  // ---------------------------------------------------------------- accessors

  get connState(): ConnState {
    return this.state;
  }
  /** The name as accepted by the server (empty before Welcome). */
  get me(): string {
    return this.acceptedName || this.username;
  }
  /** Which gateway holds the current connection (Welcome.gateway_id); empty when there is none. */
  get gatewayId(): string {
    return this.gateway;
  }
  get members(): readonly string[] {
    return this.memberList;
  }
  /** Confirmed messages in id order. */
  get timeline(): readonly DisplayMessage[] {
    return this.messages;
  }
  /** The since_id the next resume would use. */
  get resumePoint(): string {
    return this.resumeId;
  }
  get pending(): PendingMessage[] {
    return [...this.outbox.values()].map((e) => ({ clientMsgId: e.clientMsgId, text: e.text, status: "pending" as const }));
  }
  get isStopped(): boolean {
    return this.stopped;
  }
  get limits(): { maxTextBytes: number } {
    return { maxTextBytes: this.maxTextBytes };
  }

  // ---------------------------------------------------------------- commands

  start(): void {
    if (this.stopped || this.ws || this.reconnectTimer !== null) return;
    this.setState("connecting");
    this.connect();
  }

  /**
   * Queues a message; it is sent now when joined, else on the next resume.
   * Returns the client_msg_id, or null when the text was refused locally.
   */
  send(text: string): string | null {
    if (this.stopped) return null;
    if (text.trim() === "") return null;
    if (new TextEncoder().encode(text).length > this.maxTextBytes) {
      this.listener.onNotice?.(`That message is too long (at most ${this.maxTextBytes} bytes).`);
      return null;
    }
    const clientMsgId = this.uuid();
    const entry: OutboxEntry = { clientMsgId, text, retries: 0, retryTimer: null };
    this.outbox.set(clientMsgId, entry);
    this.listener.onPending?.({ clientMsgId, text, status: "pending" });
    this.stopTyping();
    if (this.joinedNow) this.transmit(entry);
    return clientMsgId;
  }

  /** Call on every edit of the input box. */
  userTyping(): void {
    if (!this.joinedNow) return;
    const now = this.clock.now();
    if (!this.typingActive || now - this.typingSentAt >= this.typingThrottleMs) {
      this.typingActive = true;
      this.typingSentAt = now;
      this.frame({ case: "typing", value: { room: this.room, active: true } });
    }
    this.clearTimer("typingIdleTimer");
    this.typingIdleTimer = this.clock.setTimeout(() => {
      this.typingIdleTimer = null;
      this.stopTyping();
    }, this.typingIdleMs);
  }

  stopTyping(): void {
    this.clearTimer("typingIdleTimer");
    if (!this.typingActive) return;
    this.typingActive = false;
    if (this.joinedNow) this.frame({ case: "typing", value: { room: this.room, active: false } });
  }

  /** If waiting to reconnect, try now (e.g. the browser came back online). */
  retryNow(): void {
    if (this.stopped || this.reconnectTimer === null) return;
    this.clearTimer("reconnectTimer");
    this.connect();
  }

  /** Leaves the room and closes the connection for good (its resume token with it). */
  leave(): void {
    if (this.stopped) return;
    if (this.joinedNow) {
      this.stopTyping();
      this.frame({ case: "leave", value: { room: this.room } }, { kind: "leave" });
    }
    this.keepToken("");
    this.stop("offline");
  }

  /** Stops everything; no more reconnects. */
  stop(state: ConnState = "offline"): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const key of ["reconnectTimer", "helloRetryTimer", "openTimer", "pingTimer", "typingIdleTimer"] as const) {
      this.clearTimer(key);
    }
    for (const e of this.outbox.values()) {
      if (e.retryTimer !== null) this.clock.clearTimeout(e.retryTimer);
      e.retryTimer = null;
    }
    this.clearTypers();
    this.dropSocket(1000, "bye");
    this.joinedNow = false;
    this.gateway = "";
    this.setState(state);
  }

  // ---------------------------------------------------------------- connection

  private connect(): void {
    if (this.stopped) return;
    this.refs.clear();
    this.joinedNow = false;
    this.gateway = "";
    let sock: SocketLike;
    try {
      sock = this.socketFactory(this.url);
    } catch {
      this.onDisconnect(1006, "");
      return;
    }
    this.ws = sock;
    let opened = false;
    sock.binaryType = "arraybuffer";
    sock.onopen = () => {
      if (this.ws !== sock) return;
      opened = true;
      this.clearTimer("openTimer");
      this.lastFrameAt = this.clock.now();
      this.sendHello();
    };
    sock.onmessage = (ev) => {
      if (this.ws !== sock) return;
      this.lastFrameAt = this.clock.now();
      const data = ev.data;
      let bytes: Uint8Array;
      if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
      else if (data instanceof Uint8Array) bytes = data;
      else return; // text frames are not part of the protocol
      let frame: ServerFrame;
      try {
        frame = fromBinary(ServerFrameSchema, bytes);
      } catch {
        return;
      }
      this.onFrame(frame);
    };
    sock.onerror = () => {
      /* a close event follows */
    };
    sock.onclose = (ev) => {
      if (this.ws !== sock) return;
      this.ws = null;
      this.onDisconnect(ev.code, ev.reason);
    };
    this.openTimer = this.clock.setTimeout(() => {
      this.openTimer = null;
      if (this.ws === sock && !opened) {
        this.dropSocket(4000, "open timeout");
        this.onDisconnect(1006, "open timeout");
      }
    }, this.openTimeoutMs);
  }

  /** Detaches the current socket (its events are ignored from now on) and closes it. */
  private dropSocket(code: number, reason: string): void {
    const sock = this.ws;
    this.ws = null;
    if (!sock) return;
    sock.onopen = sock.onmessage = sock.onerror = sock.onclose = null;
    try {
      sock.close(code, reason);
    } catch {
      /* already closed */
    }
  }

  private onDisconnect(code: number, reason: string): void {
    this.joinedNow = false;
    this.gateway = "";
    this.refs.clear();
    this.typingActive = false;
    for (const key of ["helloRetryTimer", "openTimer", "pingTimer", "typingIdleTimer"] as const) {
      this.clearTimer(key);
    }
    this.clearTypers();
    if (this.stopped) return;

    if (code === CLOSE_SESSION_REPLACED) {
      this.replaced();
      return;
    }
    const fatal = describeFatalClose(code, reason);
    if (fatal) {
      if (this.everJoined) this.listener.onFatal?.(fatal);
      else this.listener.onEntryError?.(code === 4001 ? ErrorCode.KICKED : ErrorCode.INVALID_TOKEN, fatal);
      this.stop("offline");
      return;
    }
    if (this.reconnectTimer !== null) return; // a reconnect is already planned (Reconnect frame)
    if (!this.everJoined && this.attempt + 1 >= this.initialAttempts) {
      this.listener.onEntryError?.(null, "Could not reach the chat server. Please check your connection and try again.");
      this.stop("offline");
      return;
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(delayMs?: number): void {
    if (this.stopped) return;
    this.clearTimer("reconnectTimer");
    let delay = delayMs;
    if (delay === undefined) {
      delay = reconnectDelay(this.attempt, this.clock.random, this.retryJitterMs, this.backoffBaseMs, this.backoffCapMs);
      this.attempt++;
      this.backoffHistory.push(delay);
    }
    this.setState(this.everJoined ? "reconnecting" : "connecting");
    this.reconnectTimer = this.clock.setTimeout(() => {
      this.reconnectTimer = null;
      this.dropSocket(1000, "reconnecting");
      this.connect();
    }, delay);
  }

  private sendHello(): void {
    this.frame(
      { case: "hello", value: { username: this.username, client: this.client, resumeToken: this.resumeToken } },
      { kind: "hello" },
    );
  }

  private sendJoin(sinceId: string): void {
    this.frame({ case: "join", value: { room: this.room, sinceId } }, { kind: "join" });
  }

  private transmit(entry: OutboxEntry): void {
    if (entry.retryTimer !== null) {
      this.clock.clearTimeout(entry.retryTimer);
      entry.retryTimer = null;
    }
    this.frame(
      { case: "send", value: { room: this.room, text: entry.text, clientMsgId: entry.clientMsgId } },
      { kind: "send", clientMsgId: entry.clientMsgId },
    );
  }

  private frame(kind: Kind, info?: RefInfo): bigint {
    const sock = this.ws;
    if (!sock || sock.readyState !== WS_OPEN) return 0n;
    const ref = info ? this.nextRef++ : 0n;
    if (info) this.refs.set(ref, info);
    const bytes = toBinary(ClientFrameSchema, create(ClientFrameSchema, { ref, kind }));
    try {
      sock.send(bytes);
    } catch {
      /* the close event will follow */
    }
    return ref;
  }

  // ---------------------------------------------------------------- incoming

  private onFrame(f: ServerFrame): void {
    const k = f.kind;
    switch (k.case) {
      case "welcome": {
        this.clearTimer("helloRetryTimer");
        this.refs.delete(f.ref);
        this.acceptedName = k.value.username || this.username;
        this.gateway = k.value.gatewayId;
        // The token just sent is spent; this one resumes the session from now on.
        this.keepToken(k.value.resumeToken);
        const max = k.value.limits?.maxTextBytes;
        if (max) this.maxTextBytes = max;
        this.listener.onWelcome?.(this.acceptedName, { gatewayId: k.value.gatewayId, sessionId: k.value.sessionId });
        // First join: the server's default history; resume: everything after the resume point.
        this.sendJoin(this.everJoined ? this.resumeId : "");
        break;
      }
      case "joined":
        if (k.value.room !== this.room) break;
        this.refs.delete(f.ref);
        this.onJoined(k.value.members, k.value.history, k.value.historyTruncated);
        break;
      case "message":
        if (k.value.room !== this.room) break;
        this.onChatMessage(k.value, true);
        break;
      case "presence": {
        const p = k.value;
        if (p.room !== this.room) break;
        if (p.kind === PresenceChange_Kind.JOINED) {
          this.memberList = withMember(this.memberList, p.username);
          this.listener.onMembers?.(this.memberList);
          this.listener.onPresence?.(p.username, "joined");
        } else if (p.kind === PresenceChange_Kind.LEFT) {
          this.memberList = withoutMember(this.memberList, p.username);
          this.removeTyper(p.username);
          this.listener.onMembers?.(this.memberList);
          this.listener.onPresence?.(p.username, "left");
        }
        break;
      }
      case "ack": {
        const info = this.refs.get(f.ref);
        this.refs.delete(f.ref);
        if (!info || info.kind !== "send") break;
        const entry = this.outbox.get(info.clientMsgId);
        if (!entry) break; // already confirmed by the pushed ChatMessage
        this.resolveOutbox(entry.clientMsgId, k.value.id);
        this.addMessage(
          {
            id: k.value.id,
            room: this.room,
            username: this.me,
            text: entry.text,
            sentAtMs: Number(k.value.sentAtMs),
            clientMsgId: entry.clientMsgId,
            system: false,
            own: true,
          },
          false,
        );
        break;
      }
      case "error":
        this.onError(f.ref, k.value.code, k.value.message);
        break;
      case "typing": {
        const t = k.value;
        if (t.room !== this.room || sameName(t.username, this.me)) break;
        if (t.active) this.setTyper(t.username);
        else this.removeTyper(t.username);
        break;
      }
      case "reconnect":
        // Drain: keep using this connection until after_ms, then move on.
        if (this.reconnectTimer === null) this.scheduleReconnect(k.value.afterMs);
        break;
      case "pong":
      case "left":
      case "history":
        this.refs.delete(f.ref);
        break;
      default:
        break;
    }
  }

  private onJoined(members: string[], history: ChatMessage[], truncated: boolean): void {
    const first = !this.everJoined;
    this.everJoined = true;
    this.joinedNow = true;
    this.attempt = 0;
    this.memberList = [...members].sort(compareNames);
    // Only leave "reconnecting" if no drain reconnect is pending on this connection.
    if (this.reconnectTimer === null) this.setState("connected");
    this.listener.onJoined?.({ room: this.room, members: this.memberList, first, historyTruncated: truncated });
    this.listener.onMembers?.(this.memberList);
    for (const m of history) {
      if (m.room && m.room !== this.room) continue;
      this.onChatMessage(m, true);
    }
    if (!first && truncated) this.listener.onNotice?.("Some messages from while you were away are no longer available.");
    // Everything not confirmed yet goes out again, with the same client_msg_id.
    for (const entry of this.outbox.values()) this.transmit(entry);
    this.schedulePing();
  }

  private onChatMessage(m: ChatMessage, stream: boolean): void {
    let own = !m.system && sameName(m.username, this.me);
    if (m.clientMsgId && this.outbox.has(m.clientMsgId) && !m.system) {
      own = true;
      this.resolveOutbox(m.clientMsgId, m.id);
    }
    if (!m.system) this.removeTyper(m.username);
    this.addMessage(
      {
        id: m.id,
        room: m.room || this.room,
        username: m.username,
        text: m.text,
        sentAtMs: Number(m.sentAtMs),
        clientMsgId: m.clientMsgId,
        system: m.system,
        own,
      },
      stream,
    );
  }

  /** Inserts in id order unless already shown; returns whether it was new. */
  private addMessage(msg: DisplayMessage, stream: boolean): boolean {
    if (stream) this.resumeId = maxId(this.resumeId, msg.id);
    if (this.seen.has(msg.id)) return false;
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
    this.listener.onMessage?.(msg, lo);
    return true;
  }

  private resolveOutbox(clientMsgId: string, id: string | null): void {
    const entry = this.outbox.get(clientMsgId);
    if (!entry) return;
    if (entry.retryTimer !== null) this.clock.clearTimeout(entry.retryTimer);
    this.outbox.delete(clientMsgId);
    this.listener.onPendingResolved?.(clientMsgId, id);
  }

  private onError(ref: bigint, code: ErrorCode, message: string): void {
    const info = this.refs.get(ref);
    this.refs.delete(ref);
    const text = describeError(code, message);

    if (code === ErrorCode.SESSION_REPLACED) {
      this.replaced();
      return;
    }
    if (code === ErrorCode.KICKED || code === ErrorCode.INVALID_TOKEN) {
      if (this.everJoined) this.listener.onFatal?.(text);
      else this.listener.onEntryError?.(code, text);
      this.stop("offline");
      return;
    }
    if (!info) return; // ref 0 or a frame we did not correlate

    switch (info.kind) {
      case "hello":
        if (this.everJoined && (code === ErrorCode.USERNAME_TAKEN || isTransient(code))) {
          // Our previous connection still holds the name: ask again later.
          this.retryHelloLater();
        } else if (!this.everJoined && isTransient(code) && this.attempt + 1 < this.initialAttempts) {
          this.retryHelloLater();
        } else {
          this.failHard(code, text);
        }
        break;
      case "join":
        if (this.everJoined && code === ErrorCode.INVALID_ARGUMENT) {
          this.sendJoin(""); // the resume point was refused: take the recent history instead
        } else if (this.everJoined && isTransient(code)) {
          this.dropSocket(1000, "retry");
          this.scheduleReconnect();
        } else {
          this.failHard(code, text);
        }
        break;
      case "send": {
        const entry = this.outbox.get(info.clientMsgId);
        if (!entry) break;
        if (code === ErrorCode.RATE_LIMITED || code === ErrorCode.NOT_IN_ROOM || isTransient(code)) {
          if (code === ErrorCode.RATE_LIMITED && entry.retries === 0) this.listener.onNotice?.(text);
          entry.retries++;
          const delay = Math.min(this.backoffCapMs, 500 * entry.retries) + Math.floor(this.clock.random() * 250);
          entry.retryTimer = this.clock.setTimeout(() => {
            entry.retryTimer = null;
            if (this.outbox.has(entry.clientMsgId) && this.joinedNow) this.transmit(entry);
          }, delay);
        } else {
          this.outbox.delete(entry.clientMsgId);
          this.listener.onPending?.({ clientMsgId: entry.clientMsgId, text: entry.text, status: "failed", error: text });
        }
        break;
      }
      default:
        break;
    }
  }

  private retryHelloLater(): void {
    // The server answered, so it is reachable: the name frees within seconds
    // (5 s after a close, ~12 s after a gateway crash). Poll for it at most
    // every 2 s rather than backing off to the full reconnect cap.
    const cap = Math.min(this.backoffCapMs, HELLO_RETRY_CAP_MS);
    const delay = backoffDelay(this.attempt, this.clock.random, this.backoffBaseMs, cap);
    this.attempt++;
    this.backoffHistory.push(delay);
    this.setState(this.everJoined ? "reconnecting" : "connecting");
    const sock = this.ws;
    this.clearTimer("helloRetryTimer");
    this.helloRetryTimer = this.clock.setTimeout(() => {
      this.helloRetryTimer = null;
      if (this.ws === sock && sock) this.sendHello();
    }, delay);
  }

  private failHard(code: ErrorCode, text: string): void {
    if (this.everJoined) this.listener.onFatal?.(text);
    else this.listener.onEntryError?.(code, text);
    this.stop("offline");
  }

  /** A newer session of this client took over (Error SESSION_REPLACED, close 4002): stop, never reconnect. */
  private replaced(): void {
    this.keepToken(""); // spent by the session that took over
    const text = describeError(ErrorCode.SESSION_REPLACED);
    if (this.everJoined) this.listener.onReplaced?.(text);
    else this.listener.onEntryError?.(ErrorCode.SESSION_REPLACED, text);
    this.stop("offline");
  }

  // ---------------------------------------------------------------- resume token

  /** The stored token if it was issued for this session's name, else "". */
  private storedToken(): string {
    let rec: unknown;
    try {
      const raw = this.storage?.getItem(RESUME_STORAGE_KEY);
      if (!raw) return "";
      rec = JSON.parse(raw);
    } catch {
      return ""; // storage blocked, or not our JSON
    }
    const { username, token } = (rec ?? {}) as { username?: unknown; token?: unknown };
    if (typeof username !== "string" || typeof token !== "string") return "";
    return sameName(username, this.username) ? token : "";
  }

  /** Remembers the token for the next Hello, in memory and in storage ("" forgets it). */
  private keepToken(token: string): void {
    this.resumeToken = token;
    try {
      if (token) this.storage?.setItem(RESUME_STORAGE_KEY, JSON.stringify({ username: this.me, token }));
      else this.storage?.removeItem(RESUME_STORAGE_KEY);
    } catch {
      /* storage full or blocked: the token still lives in memory for reconnects */
    }
  }

  // ---------------------------------------------------------------- liveness

  private schedulePing(): void {
    this.clearTimer("pingTimer");
    if (this.pingIntervalMs <= 0) return;
    this.pingTimer = this.clock.setTimeout(() => {
      this.pingTimer = null;
      if (!this.joinedNow || !this.ws) return;
      if (this.clock.now() - this.lastFrameAt > this.deadAfterMs) {
        // Nothing (not even a Pong) for too long: presume the connection dead.
        this.dropSocket(4000, "no response");
        this.onDisconnect(1006, "no response");
        return;
      }
      this.frame({ case: "ping", value: { clientTimeMs: BigInt(this.clock.now()) } }, { kind: "ping" });
      this.schedulePing();
    }, this.pingIntervalMs);
  }

  // ---------------------------------------------------------------- typing notices

  private setTyper(name: string): void {
    const key = name.normalize("NFC").toLowerCase();
    const old = this.typers.get(key);
    if (old) this.clock.clearTimeout(old.timer);
    const timer = this.clock.setTimeout(() => {
      this.typers.delete(key);
      this.emitTypers();
    }, this.typingExpireMs);
    this.typers.set(key, { name, timer });
    if (!old) this.emitTypers();
  }

  private removeTyper(name: string): void {
    const key = name.normalize("NFC").toLowerCase();
    const old = this.typers.get(key);
    if (!old) return;
    this.clock.clearTimeout(old.timer);
    this.typers.delete(key);
    this.emitTypers();
  }

  private clearTypers(): void {
    if (this.typers.size === 0) return;
    for (const t of this.typers.values()) this.clock.clearTimeout(t.timer);
    this.typers.clear();
    this.emitTypers();
  }

  private emitTypers(): void {
    this.listener.onTyping?.([...this.typers.values()].map((t) => t.name).sort(compareNames));
  }

  // ---------------------------------------------------------------- helpers

  private setState(s: ConnState): void {
    if (this.state === s) return;
    this.state = s;
    this.listener.onState?.(s);
  }

  private clearTimer(
    key: "reconnectTimer" | "helloRetryTimer" | "openTimer" | "pingTimer" | "typingIdleTimer",
  ): void {
    const h = this[key];
    if (h !== null) this.clock.clearTimeout(h);
    this[key] = null;
  }
}

function isTransient(code: ErrorCode): boolean {
  return code === ErrorCode.UNAVAILABLE || code === ErrorCode.INTERNAL;
}
