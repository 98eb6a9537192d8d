// Test doubles for driving ChatSession without a network or real time.

import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { type ClientFrame, ClientFrameSchema, ServerFrameSchema } from "../gen/chat/v1/chat_pb";
import type { Clock, SocketLike, StorageLike, TimerHandle } from "../src/session";

export class FakeClock implements Clock {
  t = 1_700_000_000_000;
  private seq = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();
  /** Values handed out by random(), cycled; default 0.5. */
  randoms: number[] = [0.5];
  private ri = 0;

  setTimeout = (fn: () => void, ms: number): TimerHandle => {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  };
  clearTimeout = (h: TimerHandle): void => {
    this.timers.delete(h as number);
  };
  now = (): number => this.t;
  random = (): number => {
    const v = this.randoms[this.ri % this.randoms.length]!;
    this.ri++;
    return v;
  };

  /** Runs every timer due within `ms`, in time order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = end;
  }

  get pendingTimers(): number {
    return this.timers.size;
  }
}

type ServerKind = NonNullable<MessageInitShape<typeof ServerFrameSchema>["kind"]>;

export class FakeSocket implements SocketLike {
  binaryType = "blob";
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  /** Frames the client sent, decoded. */
  sent: ClientFrame[] = [];
  closedByClient: { code?: number; reason?: string } | null = null;

  constructor(readonly url: string) {}

  send(data: Uint8Array): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(fromBinary(ClientFrameSchema, data));
  }
  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  // ----- server side
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(kind: ServerKind, ref = 0n): void {
    const bytes = toBinary(ServerFrameSchema, create(ServerFrameSchema, { ref, kind }));
    // Like a browser socket with binaryType "arraybuffer".
    const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    this.onmessage?.({ data: buf });
  }
  serverClose(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  // ----- helpers
  framesOf<K extends NonNullable<ClientFrame["kind"]["case"]>>(k: K) {
    return this.sent.filter((f) => f.kind.case === k) as (ClientFrame & { kind: Extract<ClientFrame["kind"], { case: K }> })[];
  }
  last<K extends NonNullable<ClientFrame["kind"]["case"]>>(k: K) {
    const all = this.framesOf(k);
    return all[all.length - 1];
  }
}

export class SocketFactory {
  sockets: FakeSocket[] = [];
  create = (url: string): SocketLike => {
    const s = new FakeSocket(url);
    this.sockets.push(s);
    return s;
  };
  get current(): FakeSocket {
    const s = this.sockets[this.sockets.length - 1];
    if (!s) throw new Error("no socket yet");
    return s;
  }
}

export function msg(id: string, username: string, text: string, extra: { clientMsgId?: string; system?: boolean; room?: string } = {}) {
  return {
    id,
    room: extra.room ?? "lobby",
    username,
    text,
    sentAtMs: BigInt(id.split("-")[0] ?? "0"),
    clientMsgId: extra.clientMsgId ?? "",
    system: extra.system ?? false,
  };
}

/** A sessionStorage stand-in; `failing` makes every call throw, like blocked storage. */
export class FakeStorage implements StorageLike {
  readonly items = new Map<string, string>();
  failing = false;

  getItem(key: string): string | null {
    if (this.failing) throw new Error("storage blocked");
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    if (this.failing) throw new Error("storage blocked");
    this.items.set(key, value);
  }
  removeItem(key: string): void {
    if (this.failing) throw new Error("storage blocked");
    this.items.delete(key);
  }
}
