// The session's public shapes: its connection states, what it tells its
// listener (the views), and the options it is built with.

import type { ErrorCode } from "../gen/chat/v1/chat_pb";
import type { Clock, SocketLike, StorageLike } from "./deps";
import type { Catalogue } from "./i18n";
import type { PendingMessage } from "./outbox";
import type { DisplayMessage, MessageOrigin } from "./timeline";

export type ConnState = "connecting" | "connected" | "reconnecting" | "offline";

export interface JoinedInfo {
  room: string;
  members: readonly string[];
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
  onMessage?(msg: DisplayMessage, index: number, origin: MessageOrigin): void;
  /**
   * An older page (fetchOlder) is in: its messages came through onMessage
   * first. `failed`: it was refused (e.g. rate-limited); ask again later.
   */
  onOlder?(info: { added: number; hasMore: boolean; failed?: boolean }): void;
  /** A message was queued, or its status changed (e.g. failed). */
  onPending?(p: PendingMessage): void;
  /** A queued message is no longer pending (confirmed or dropped). */
  onPendingResolved?(clientMsgId: string, id: string | null): void;
  onMembers?(members: readonly string[]): void;
  onPresence?(username: string, kind: "joined" | "left"): void;
  onTyping?(usernames: string[]): void;
  /** The session could not enter the room (before the first Joined); it has stopped. */
  onEntryError?(code: ErrorCode | null, text: string): void;
  /** The session stopped for good after having joined (kicked, invalid token, ...). */
  onFatal?(text: string): void;
  /** Another tab or window took over with this one's resume token; this one has stopped. */
  onReplaced?(text: string): void;
  /** The signed token was refused or expired (INVALID_TOKEN, close 4003): a new one is needed. */
  onTokenRefused?(): void;
  /** Something worth a transient note to the user. */
  onNotice?(text: string): void;
}

export interface SessionOptions {
  /** WebSocket URL, e.g. wss://host/ws. */
  url: string;
  username: string;
  room: string;
  /** The signed token (JWT) sent in every Hello, when the server checks identities; "" for none. */
  authToken?: string;
  listener?: SessionListener;
  socketFactory?: (url: string) => SocketLike;
  clock?: Clock;
  uuid?: () => string;
  /** Keeps the resume token across reloads; default the tab's sessionStorage, null for memory only. */
  storage?: StorageLike | null;
  /** The words for people (errors, notices), read when needed; default English. */
  texts?: () => Catalogue;
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
  /** Messages per older page (FetchHistory.limit). */
  pageSize?: number;
}
