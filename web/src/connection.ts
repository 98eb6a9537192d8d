// One WebSocket at a time to /ws: opening it (with a deadline), encoding
// client frames with a fresh `ref` for requests, decoding server frames,
// the app-level Ping while joined and the "no frame for too long" check.
// It decides nothing about the protocol: every event goes to its hooks.

import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { ClientFrameSchema, type ServerFrame, ServerFrameSchema } from "../gen/chat/v1/chat_pb";
import { type Clock, type SocketLike, Timer } from "./deps";

/** What a request was, by its ref, so that its answer can be understood. */
export type RefInfo =
  | { kind: "hello" }
  | { kind: "join" }
  | { kind: "send"; clientMsgId: string }
  | { kind: "leave" }
  | { kind: "history"; beforeId: string }
  | { kind: "ping" };

export type ClientKind = NonNullable<MessageInitShape<typeof ClientFrameSchema>["kind"]>;

export interface ConnectionHooks {
  /** The socket opened. */
  onOpen(): void;
  onFrame(frame: ServerFrame): void;
  /** The socket is gone (closed, failed, never opened in time, or silent too long). */
  onLost(code: number, reason: string): void;
}

export interface ConnectionOptions {
  url: string;
  socketFactory: (url: string) => SocketLike;
  clock: Clock;
  /** Socket not open after this long: give up on it. */
  openTimeoutMs: number;
  /** App-level Ping period while joined; 0 disables. */
  pingIntervalMs: number;
  /** No frame for this long while pinging: the connection is presumed dead. */
  deadAfterMs: number;
}

const WS_OPEN = 1;

export class Connection {
  /** The current socket; null between connections. */
  private ws: SocketLike | null = null;
  private nextRef = 1n;
  /** Requests on the current socket that await an answer. */
  private readonly refs = new Map<bigint, RefInfo>();
  private readonly openTimer: Timer;
  private readonly pingTimer: Timer;
  private lastFrameAt = 0;

  constructor(
    private readonly opts: ConnectionOptions,
    private readonly hooks: ConnectionHooks,
  ) {
    this.openTimer = new Timer(opts.clock);
    this.pingTimer = new Timer(opts.clock);
  }

  /** The current socket (an identity to compare against later), or null. */
  get socket(): SocketLike | null {
    return this.ws;
  }

  /** Opens a new socket. A factory that throws counts as a lost connection. */
  open(): void {
    this.refs.clear();
    let sock: SocketLike;
    try {
      sock = this.opts.socketFactory(this.opts.url);
    } catch {
      this.hooks.onLost(1006, "");
      return;
    }
    this.ws = sock;
    let opened = false;
    sock.binaryType = "arraybuffer";
    sock.onopen = () => {
      if (this.ws !== sock) return;
      opened = true;
      this.openTimer.clear();
      this.lastFrameAt = this.opts.clock.now();
      this.hooks.onOpen();
    };
    sock.onmessage = (ev) => {
      if (this.ws !== sock) return;
      this.lastFrameAt = this.opts.clock.now();
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
      this.hooks.onFrame(frame);
    };
    sock.onerror = () => {
      /* a close event follows */
    };
    sock.onclose = (ev) => {
      if (this.ws !== sock) return;
      this.ws = null;
      this.hooks.onLost(ev.code, ev.reason);
    };
    this.openTimer.set(() => {
      if (this.ws === sock && !opened) {
        this.drop(4000, "open timeout");
        this.hooks.onLost(1006, "open timeout");
      }
    }, this.opts.openTimeoutMs);
  }

  /** Detaches the current socket (its events are ignored from now on) and closes it. */
  drop(code: number, reason: string): void {
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

  /** Sends a frame if the socket is open; a request (`info`) gets a fresh ref, which is returned. */
  send(kind: ClientKind, info?: RefInfo): bigint {
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

  /** What the request with this ref was (it is answered now), if known. */
  take(ref: bigint): RefInfo | undefined {
    const info = this.refs.get(ref);
    this.refs.delete(ref);
    return info;
  }

  /** Forgets every request in flight (the socket they were on is gone). */
  forgetRequests(): void {
    this.refs.clear();
  }

  /** Pings every pingIntervalMs while `live()`; silence beyond deadAfterMs drops the socket. */
  startPing(live: () => boolean): void {
    this.pingTimer.clear();
    if (this.opts.pingIntervalMs <= 0) return;
    this.pingTimer.set(() => {
      if (!live() || !this.ws) return;
      const now = this.opts.clock.now();
      if (now - this.lastFrameAt > this.opts.deadAfterMs) {
        // Nothing (not even a Pong) for too long: presume the connection dead.
        this.drop(4000, "no response");
        this.hooks.onLost(1006, "no response");
        return;
      }
      this.send({ case: "ping", value: { clientTimeMs: BigInt(now) } }, { kind: "ping" });
      this.startPing(live);
    }, this.opts.pingIntervalMs);
  }

  /** Stops the open deadline and the pings. */
  stopTimers(): void {
    this.openTimer.clear();
    this.pingTimer.clear();
  }
}
