// One chat session, the façade the views use: a connection to /ws that says
// Hello, joins one room and keeps that room's timeline correct across
// disconnects. The parts live beside it: connection.ts (the socket),
// backoff.ts (when to retry), timeline.ts (messages and the resume point),
// outbox.ts (sends not yet confirmed), members.ts, typing.ts and
// resume-token.ts. Here are only the protocol's decisions.
//
// Everything that touches the outside world is injected (socket factory,
// timers, clock, randomness, uuid, storage) so that tests drive it directly.
//
// Reconnection rules:
// - Every Welcome carries a resume token (resume-token.ts), sent in every
//   Hello for the same name: on each reconnect, and after a page reload. The
//   server then hands the name over at once, even while the earlier
//   connection is still open or its gateway has just died, and the other
//   members see no one leave and come back.
// - On an unexpected disconnect the first retry goes out at once, after
//   0-100 ms of jitter; only consecutive failures back off (backoff.ts); the
//   count starts over once the room is joined again. A Reconnect frame
//   (drain) uses its after_ms instead.
// - On the new connection: Hello with the same username, Join with since_id =
//   the resume point, then every Send not yet Acked again with the same
//   client_msg_id (the server dedupes those).
// - USERNAME_TAKEN while resuming is retried with backoff; close codes 4001 /
//   4003 stop for good.
// - Error SESSION_REPLACED or close code 4002: another tab or window took
//   over with this tab's token. The session stops for good, forgets the
//   spent token, and never reconnects on it.

import { type ChatMessage, ErrorCode, PresenceChange_Kind, type ServerFrame } from "../gen/chat/v1/chat_pb";
import { Backoff } from "./backoff";
import { Connection, type ClientKind, type RefInfo } from "./connection";
import { type Clock, realClock, type SocketLike, type StorageLike, tabStorage, Timer } from "./deps";
import { CLOSE_SESSION_REPLACED, describeError, describeFatalClose } from "./errors";
import type { Catalogue } from "./i18n";
import type { ConnState, SessionListener, SessionOptions } from "./session-api";
import { en } from "./lang-en";
import { Members } from "./members";
import { sameName } from "./names";
import { Outbox, type OutboxEntry, type PendingMessage } from "./outbox";
import { ResumeToken } from "./resume-token";
import { type DisplayMessage, type MessageOrigin, Timeline } from "./timeline";
import { Typing } from "./typing";

export { backoffDelay, HELLO_RETRY_CAP_MS, reconnectDelay } from "./backoff";
export { type Clock, realClock, type SocketLike, type StorageLike, tabStorage, type TimerHandle } from "./deps";
export { sameName } from "./names";
export type { PendingMessage } from "./outbox";
export { RESUME_STORAGE_KEY } from "./resume-token";
export type { DisplayMessage, MessageOrigin } from "./timeline";
export type { ConnState, JoinedInfo, SessionListener, SessionOptions } from "./session-api";

export class ChatSession {
  readonly url: string;
  readonly room: string;
  readonly username: string;
  /** Hello.token: the signed identity, or "". */
  private readonly authToken: string;

  private readonly listener: SessionListener;
  private readonly clock: Clock;
  private readonly uuid: () => string;
  private readonly client: string;
  private readonly initialAttempts: number;
  private readonly pageSize: number;
  private readonly t: () => Catalogue;

  private readonly conn: Connection;
  private readonly backoff: Backoff;
  private readonly reconnectTimer: Timer;
  private readonly helloRetryTimer: Timer;
  private readonly token: ResumeToken;
  private readonly messages = new Timeline();
  private readonly outbox: Outbox;
  private readonly memberList = new Members();
  private readonly typing: Typing;

  private state: ConnState = "connecting";
  private stopped = false;
  private everJoined = false;
  /** Joined on the current connection: sends and typing go out now. */
  private joinedNow = false;
  /** An older page is on its way. */
  private fetching = false;
  private acceptedName = "";
  /** Welcome.gateway_id of the current connection; empty while not welcomed. */
  private gateway = "";
  private maxTextBytes = 4096;

  constructor(opts: SessionOptions) {
    this.url = opts.url;
    // The server names rooms in NFC (Joined.room, ChatMessage.room): so do we.
    this.room = opts.room.normalize("NFC");
    this.username = opts.username;
    this.authToken = opts.authToken ?? "";
    this.listener = opts.listener ?? {};
    this.clock = opts.clock ?? realClock;
    this.uuid = opts.uuid ?? (() => crypto.randomUUID());
    this.client = opts.client ?? "web/0.1";
    this.initialAttempts = opts.initialAttempts ?? 3;
    this.pageSize = opts.pageSize ?? 50;
    this.t = opts.texts ?? (() => en);
    const capMs = opts.backoffCapMs ?? 10_000;
    this.backoff = new Backoff({
      random: () => this.clock.random(),
      jitterMs: opts.retryJitterMs ?? 100,
      baseMs: opts.backoffBaseMs ?? 250,
      capMs,
    });
    this.conn = new Connection(
      {
        url: opts.url,
        socketFactory: opts.socketFactory ?? ((url) => new WebSocket(url) as unknown as SocketLike),
        clock: this.clock,
        openTimeoutMs: opts.openTimeoutMs ?? 10_000,
        pingIntervalMs: opts.pingIntervalMs ?? 20_000,
        deadAfterMs: opts.deadAfterMs ?? 50_000,
      },
      {
        onOpen: () => this.sendHello(),
        onFrame: (f) => this.onFrame(f),
        onLost: (code, reason) => this.onDisconnect(code, reason),
      },
    );
    this.reconnectTimer = new Timer(this.clock);
    this.helloRetryTimer = new Timer(this.clock);
    this.outbox = new Outbox(this.clock, capMs);
    this.typing = new Typing({
      clock: this.clock,
      throttleMs: opts.typingThrottleMs ?? 3_000,
      idleMs: opts.typingIdleMs ?? 4_000,
      expireMs: opts.typingExpireMs ?? 5_000,
      send: (active) => this.frame({ case: "typing", value: { room: this.room, active } }),
      canSend: () => this.joinedNow,
      onTypers: (names) => this.listener.onTyping?.(names),
    });
    // After a reload: the token of this tab's previous session, if it had this name.
    this.token = new ResumeToken(opts.storage === undefined ? tabStorage() : opts.storage);
    this.token.load(this.username);
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
    return this.memberList.names;
  }
  /** Confirmed messages in id order. */
  get timeline(): readonly DisplayMessage[] {
    return this.messages.list;
  }
  /** The since_id the next resume would use. */
  get resumePoint(): string {
    return this.messages.resumePoint;
  }
  /** Whether older messages may exist (false once a page said it was the first). */
  get hasOlder(): boolean {
    return this.messages.hasMore;
  }
  get pending(): PendingMessage[] {
    return this.outbox.pending;
  }
  get isStopped(): boolean {
    return this.stopped;
  }
  get limits(): { maxTextBytes: number } {
    return { maxTextBytes: this.maxTextBytes };
  }
  /** Delays chosen by the backoff, most recent last (for tests and diagnostics). */
  get backoffHistory(): readonly number[] {
    return this.backoff.history;
  }

  // ---------------------------------------------------------------- commands

  start(): void {
    if (this.stopped || this.conn.socket || this.reconnectTimer.pending) return;
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
      this.listener.onNotice?.(this.t().tooLong(this.maxTextBytes));
      return null;
    }
    const clientMsgId = this.uuid();
    const entry = this.outbox.add(clientMsgId, text);
    this.listener.onPending?.({ clientMsgId, text, status: "pending" });
    this.typing.stop();
    if (this.joinedNow) this.transmit(entry);
    return clientMsgId;
  }

  /**
   * Asks for the page of messages before the oldest one held (FetchHistory
   * with before_id). Returns false when there is nothing to ask: not joined,
   * a page already on its way, or the start of the room reached.
   */
  fetchOlder(): boolean {
    if (!this.joinedNow || this.fetching || !this.messages.hasMore) return false;
    const beforeId = this.messages.oldestId;
    this.fetching = true;
    const ref = this.frame(
      { case: "fetchHistory", value: { room: this.room, beforeId, limit: this.pageSize } },
      { kind: "history", beforeId },
    );
    if (ref === 0n) this.fetching = false;
    return ref !== 0n;
  }

  /** Call on every edit of the input box. */
  userTyping(): void {
    if (!this.joinedNow) return;
    this.typing.userTyping();
  }

  stopTyping(): void {
    this.typing.stop();
  }

  /** If waiting to reconnect, try now (e.g. the browser came back online). */
  retryNow(): void {
    if (this.stopped || !this.reconnectTimer.pending) return;
    this.reconnectTimer.clear();
    this.connect();
  }

  /** Leaves the room and closes the connection for good (its resume token with it). */
  leave(): void {
    if (this.stopped) return;
    if (this.joinedNow) {
      this.typing.stop();
      this.frame({ case: "leave", value: { room: this.room } }, { kind: "leave" });
    }
    this.token.keep("", this.me);
    this.stop("offline");
  }

  /** Stops everything; no more reconnects. */
  stop(state: ConnState = "offline"): void {
    if (this.stopped) return;
    this.stopped = true;
    this.reconnectTimer.clear();
    this.helloRetryTimer.clear();
    this.conn.stopTimers();
    this.outbox.cancelAllRetries();
    this.typing.reset();
    this.conn.drop(1000, "bye");
    this.joinedNow = false;
    this.gateway = "";
    this.setState(state);
  }

  // ---------------------------------------------------------------- connection

  private connect(): void {
    if (this.stopped) return;
    this.joinedNow = false;
    this.fetching = false;
    this.gateway = "";
    this.conn.open();
  }

  private onDisconnect(code: number, reason: string): void {
    this.joinedNow = false;
    this.fetching = false;
    this.gateway = "";
    this.conn.forgetRequests();
    this.helloRetryTimer.clear();
    this.conn.stopTimers();
    this.typing.reset();
    if (this.stopped) return;

    if (code === CLOSE_SESSION_REPLACED) {
      this.replaced();
      return;
    }
    const fatal = describeFatalClose(code, reason, this.t());
    if (code === 4003) this.listener.onTokenRefused?.();
    if (fatal) {
      if (this.everJoined) this.listener.onFatal?.(fatal);
      else this.listener.onEntryError?.(code === 4001 ? ErrorCode.KICKED : ErrorCode.INVALID_TOKEN, fatal);
      this.stop("offline");
      return;
    }
    if (this.reconnectTimer.pending) return; // a reconnect is already planned (Reconnect frame)
    if (!this.everJoined && this.backoff.failures + 1 >= this.initialAttempts) {
      this.listener.onEntryError?.(null, this.t().unreachable);
      this.stop("offline");
      return;
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(delayMs?: number): void {
    if (this.stopped) return;
    this.reconnectTimer.clear();
    const delay = delayMs ?? this.backoff.nextReconnect();
    this.setState(this.everJoined ? "reconnecting" : "connecting");
    this.reconnectTimer.set(() => {
      this.conn.drop(1000, "reconnecting");
      this.connect();
    }, delay);
  }

  private sendHello(): void {
    this.frame(
      {
        case: "hello",
        value: { username: this.username, client: this.client, resumeToken: this.token.value, token: this.authToken },
      },
      { kind: "hello" },
    );
  }

  private sendJoin(sinceId: string): void {
    this.frame({ case: "join", value: { room: this.room, sinceId } }, { kind: "join" });
  }

  private transmit(entry: OutboxEntry): void {
    this.outbox.cancelRetry(entry);
    this.frame(
      { case: "send", value: { room: this.room, text: entry.text, clientMsgId: entry.clientMsgId } },
      { kind: "send", clientMsgId: entry.clientMsgId },
    );
  }

  private frame(kind: ClientKind, info?: RefInfo): bigint {
    return this.conn.send(kind, info);
  }

  // ---------------------------------------------------------------- incoming

  private onFrame(f: ServerFrame): void {
    const k = f.kind;
    switch (k.case) {
      case "welcome": {
        this.helloRetryTimer.clear();
        this.conn.take(f.ref);
        this.acceptedName = k.value.username || this.username;
        this.gateway = k.value.gatewayId;
        // The token just sent is spent; this one resumes the session from now on.
        this.token.keep(k.value.resumeToken, this.me);
        const max = k.value.limits?.maxTextBytes;
        if (max) this.maxTextBytes = max;
        this.listener.onWelcome?.(this.acceptedName, { gatewayId: k.value.gatewayId, sessionId: k.value.sessionId });
        // First join: the server's default history; resume: everything after the resume point.
        this.sendJoin(this.everJoined ? this.messages.resumePoint : "");
        break;
      }
      case "joined":
        if (k.value.room !== this.room) break;
        this.conn.take(f.ref);
        this.onJoined(k.value.members, k.value.history, k.value.historyTruncated);
        break;
      case "message":
        if (k.value.room !== this.room) break;
        this.onChatMessage(k.value, "stream");
        break;
      case "presence": {
        const p = k.value;
        if (p.room !== this.room) break;
        if (p.kind === PresenceChange_Kind.JOINED) {
          const list = this.memberList.joined(p.username);
          this.listener.onMembers?.(list);
          this.listener.onPresence?.(p.username, "joined");
        } else if (p.kind === PresenceChange_Kind.LEFT) {
          const list = this.memberList.left(p.username);
          this.typing.removeTyper(p.username);
          this.listener.onMembers?.(list);
          this.listener.onPresence?.(p.username, "left");
        }
        break;
      }
      case "ack": {
        const info = this.conn.take(f.ref);
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
          "ack",
        );
        break;
      }
      case "history": {
        const info = this.conn.take(f.ref);
        if (!info || info.kind !== "history" || k.value.room !== this.room) break;
        this.fetching = false;
        let added = 0;
        for (const m of k.value.messages) if (this.onChatMessage(m, "older")) added++;
        // An empty page says there is nothing before it, whatever has_more says.
        this.messages.hasMore = k.value.hasMore && k.value.messages.length > 0;
        this.listener.onOlder?.({ added, hasMore: this.messages.hasMore });
        break;
      }
      case "error":
        this.onError(f.ref, k.value.code, k.value.message);
        break;
      case "typing": {
        const t = k.value;
        if (t.room !== this.room || sameName(t.username, this.me)) break;
        if (t.active) this.typing.setTyper(t.username);
        else this.typing.removeTyper(t.username);
        break;
      }
      case "reconnect":
        // Drain: keep using this connection until after_ms, then move on.
        if (!this.reconnectTimer.pending) this.scheduleReconnect(k.value.afterMs);
        break;
      case "pong":
      case "left":
        this.conn.take(f.ref);
        break;
      default:
        break;
    }
  }

  private onJoined(members: string[], history: ChatMessage[], truncated: boolean): void {
    const first = !this.everJoined;
    this.everJoined = true;
    this.joinedNow = true;
    this.backoff.reset();
    const list = this.memberList.reset(members);
    // Only leave "reconnecting" if no drain reconnect is pending on this connection.
    if (!this.reconnectTimer.pending) this.setState("connected");
    this.listener.onJoined?.({ room: this.room, members: list, first, historyTruncated: truncated });
    this.listener.onMembers?.(list);
    for (const m of history) {
      if (m.room && m.room !== this.room) continue;
      this.onChatMessage(m, "replay");
    }
    if (!first && truncated) this.listener.onNotice?.(this.t().historyGap);
    // Everything not confirmed yet goes out again, with the same client_msg_id.
    for (const entry of this.outbox.all()) this.transmit(entry);
    this.conn.startPing(() => this.joinedNow);
  }

  /** Returns whether the message was new. */
  private onChatMessage(m: ChatMessage, origin: MessageOrigin): boolean {
    let own = !m.system && sameName(m.username, this.me);
    if (m.clientMsgId && this.outbox.has(m.clientMsgId) && !m.system) {
      own = true;
      this.resolveOutbox(m.clientMsgId, m.id);
    }
    if (!m.system && origin !== "older") this.typing.removeTyper(m.username);
    return this.addMessage(
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
      origin,
    );
  }

  private addMessage(msg: DisplayMessage, origin: MessageOrigin): boolean {
    const index = this.messages.add(msg, origin);
    if (index < 0) return false;
    this.listener.onMessage?.(msg, index, origin);
    return true;
  }

  private resolveOutbox(clientMsgId: string, id: string | null): void {
    if (this.outbox.remove(clientMsgId)) this.listener.onPendingResolved?.(clientMsgId, id);
  }

  private onError(ref: bigint, code: ErrorCode, message: string): void {
    const info = this.conn.take(ref);
    const text = describeError(code, message, this.t());

    if (code === ErrorCode.SESSION_REPLACED) {
      this.replaced();
      return;
    }
    if (code === ErrorCode.KICKED || code === ErrorCode.INVALID_TOKEN) {
      if (code === ErrorCode.INVALID_TOKEN) this.listener.onTokenRefused?.();
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
        } else if (!this.everJoined && isTransient(code) && this.backoff.failures + 1 < this.initialAttempts) {
          this.retryHelloLater();
        } else {
          this.failHard(code, text);
        }
        break;
      case "join":
        if (this.everJoined && code === ErrorCode.INVALID_ARGUMENT) {
          this.sendJoin(""); // the resume point was refused: take the recent history instead
        } else if (this.everJoined && isTransient(code)) {
          this.conn.drop(1000, "retry");
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
          this.outbox.retryLater(entry, (e) => {
            if (this.joinedNow) this.transmit(e);
          });
        } else {
          this.outbox.remove(entry.clientMsgId);
          this.listener.onPending?.({ clientMsgId: entry.clientMsgId, text: entry.text, status: "failed", error: text });
        }
        break;
      }
      case "history":
        // Rate-limited or refused: the next scroll to the top asks again.
        this.fetching = false;
        this.listener.onOlder?.({ added: 0, hasMore: this.messages.hasMore, failed: true });
        break;
      default:
        break;
    }
  }

  private retryHelloLater(): void {
    const delay = this.backoff.nextHello();
    this.setState(this.everJoined ? "reconnecting" : "connecting");
    const sock = this.conn.socket;
    this.helloRetryTimer.set(() => {
      if (this.conn.socket === sock && sock) this.sendHello();
    }, delay);
  }

  private failHard(code: ErrorCode, text: string): void {
    if (this.everJoined) this.listener.onFatal?.(text);
    else this.listener.onEntryError?.(code, text);
    this.stop("offline");
  }

  /** A newer session of this client took over (Error SESSION_REPLACED, close 4002): stop, never reconnect. */
  private replaced(): void {
    this.token.keep("", this.me); // spent by the session that took over
    const text = describeError(ErrorCode.SESSION_REPLACED, "", this.t());
    if (this.everJoined) this.listener.onReplaced?.(text);
    else this.listener.onEntryError?.(ErrorCode.SESSION_REPLACED, text);
    this.stop("offline");
  }

  private setState(s: ConnState): void {
    if (this.state === s) return;
    this.state = s;
    this.listener.onState?.(s);
  }
}

function isTransient(code: ErrorCode): boolean {
  return code === ErrorCode.UNAVAILABLE || code === ErrorCode.INTERNAL;
}
