// A bare protocol client for the browser tests (node, `ws`): it sends any
// ClientFrame, without waiting for replies, as a hostile client would, and
// encodes ServerFrames to push into a page through page.routeWebSocket.

import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { WebSocket } from "ws";
import { ClientFrameSchema, PresenceChange_Kind, type ServerFrame, ServerFrameSchema } from "../gen/chat/v1/chat_pb";

export { ErrorCode } from "../gen/chat/v1/chat_pb";

type ClientKind = NonNullable<MessageInitShape<typeof ClientFrameSchema>["kind"]>;

export class RawClient {
  /** Every frame received, in order. */
  readonly frames: ServerFrame[] = [];
  closed: { code: number; reason: string } | null = null;
  private nextRef = 1n;
  private waiters = new Set<() => void>();

  private constructor(private readonly ws: WebSocket) {
    ws.on("message", (data: Buffer) => {
      this.frames.push(fromBinary(ServerFrameSchema, new Uint8Array(data)));
      this.wake();
    });
    ws.on("close", (code: number, reason: Buffer) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
  }

  /** Opens a WebSocket to `url` (ws://host:port/ws). */
  static connect(url: string): Promise<RawClient> {
    return new Promise((res, rej) => {
      const ws = new WebSocket(url);
      ws.binaryType = "nodebuffer";
      ws.once("open", () => res(new RawClient(ws)));
      ws.once("error", rej);
    });
  }

  /** Sends one frame at once (no waiting for anything); returns its ref. */
  send(kind: ClientKind): bigint {
    const ref = this.nextRef++;
    this.ws.send(toBinary(ClientFrameSchema, create(ClientFrameSchema, { ref, kind })));
    return ref;
  }

  /** Resolves with the first frame (from `from` on) that `pred` accepts; rejects on close or timeout. */
  waitFor(pred: (f: ServerFrame) => boolean, timeoutMs = 10_000, from = 0): Promise<ServerFrame> {
    return new Promise((res, rej) => {
      const check = (): boolean => {
        const f = this.frames.slice(from).find(pred);
        if (f) {
          done();
          res(f);
          return true;
        }
        if (this.closed) {
          done();
          rej(new Error(`closed (${this.closed.code} ${this.closed.reason}) while waiting`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        rej(new Error(`no such frame within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(wake);
      };
      const wake = (): void => void check();
      if (!check()) this.waiters.add(wake);
    });
  }

  /** The reply to `ref`. */
  reply(ref: bigint, timeoutMs = 10_000): Promise<ServerFrame> {
    return this.waitFor((f) => f.ref === ref, timeoutMs);
  }

  /** Hello, then waits for the Welcome (throws on anything else). */
  async hello(username: string): Promise<void> {
    const f = await this.reply(this.send({ case: "hello", value: { username, client: "browser-test-raw" } }));
    if (f.kind.case !== "welcome") throw new Error(`Hello as ${username}: ${f.kind.case} ${JSON.stringify(f.kind.value)}`);
  }

  close(): void {
    this.ws.close(1000);
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** An encoded PresenceChange push (ref 0), as the gateway would send it. */
export function presenceFrame(room: string, username: string, kind: "joined" | "left"): Buffer {
  const frame = create(ServerFrameSchema, {
    ref: 0n,
    kind: {
      case: "presence",
      value: { room, username, kind: kind === "joined" ? PresenceChange_Kind.JOINED : PresenceChange_Kind.LEFT },
    },
  });
  return Buffer.from(toBinary(ServerFrameSchema, frame));
}
