// A small in-memory stand-in for the chat gateway, for working on the web
// client without the Rust binary: serves web/dist, /healthz, /api/rooms and
// the /ws protocol (one process, no persistence, a subset of the rules).
// It is a development aid, not the reference: the real gateway is.
//
//   npm run build && npm run mock -- --port 8090
//   CHAT_URL=http://127.0.0.1:8090 npm run test:browser

import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { randomBytes, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocket, WebSocketServer } from "ws";
import {
  type ChatMessage,
  ChatMessageSchema,
  ClientFrameSchema,
  ErrorCode,
  PresenceChange_Kind,
  ServerFrameSchema,
} from "../gen/chat/v1/chat_pb";
import { compareIds } from "../src/ids";
import { nameKey } from "../src/names";

type Kind = NonNullable<MessageInitShape<typeof ServerFrameSchema>["kind"]>;

const args = process.argv.slice(2);
const portArg = args.indexOf("--port");
const port = portArg >= 0 ? Number(args[portArg + 1]) : 8090;
const root = resolve(fileURLToPath(new URL("../dist", import.meta.url)));

interface Conn {
  ws: WebSocket;
  name: string | null;
  key: string | null;
  rooms: Set<string>;
  /** This session's resume token (Welcome.resume_token). */
  token: string;
}

const names = new Map<string, Conn>();
const rooms = new Map<string, Set<Conn>>();
const history = new Map<string, ChatMessage[]>();
const dedupe = new Map<string, ChatMessage>();
let lastMs = 0;
let seq = 0;

const badName = (n: string, max: number) => {
  const chars = [...n.normalize("NFC")];
  return chars.length < 1 || chars.length > max || /[\p{Cc}\p{Cf}]/u.test(n);
};

function nextId(): { id: string; ms: number } {
  const now = Date.now();
  if (now > lastMs) {
    lastMs = now;
    seq = 0;
  } else seq++;
  return { id: `${lastMs}-${seq}`, ms: lastMs };
}

function send(c: Conn, kind: Kind, ref = 0n) {
  if (c.ws.readyState === WebSocket.OPEN) c.ws.send(toBinary(ServerFrameSchema, create(ServerFrameSchema, { ref, kind })));
}

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Hands `old`'s name and rooms to `c` without a presence change, then tells
 * `old` (SESSION_REPLACED, close 4002). Simpler than the gateway: rooms that
 * `c` does not join again are never left.
 */
function takeOver(c: Conn, old: Conn) {
  for (const room of old.rooms) {
    const set = rooms.get(room)!;
    set.delete(old);
    set.add(c);
    c.rooms.add(room);
  }
  old.rooms.clear();
  old.key = null;
  send(old, { case: "error", value: { code: ErrorCode.SESSION_REPLACED, message: "session replaced" } });
  old.ws.close(4002, "session replaced");
}

function membersOf(room: string): string[] {
  return [...(rooms.get(room) ?? [])].map((c) => c.name!).sort();
}

function leaveRoom(c: Conn, room: string) {
  const set = rooms.get(room);
  if (!set?.delete(c)) return;
  if (set.size === 0) rooms.delete(room);
  for (const o of set) send(o, { case: "presence", value: { room, username: c.name!, kind: PresenceChange_Kind.LEFT } });
}

const http = createServer(async (req, res) => {
  const url = new URL(req.url ?? "/", "http://x");
  if (url.pathname === "/healthz") return void res.end("ok\n");
  if (url.pathname === "/api/rooms") {
    res.setHeader("content-type", "application/json");
    return void res.end(JSON.stringify({ rooms: [...rooms].map(([name, set]) => ({ name, members: set.size })) }));
  }
  const rel = normalize(url.pathname === "/" ? "index.html" : url.pathname.slice(1));
  if (rel.startsWith("..")) return void res.writeHead(404).end();
  try {
    const body = await readFile(join(root, rel));
    const types: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".map": "application/json" };
    res.writeHead(200, { "content-type": types[extname(rel)] ?? "application/octet-stream" }).end(body);
  } catch {
    res.writeHead(404).end("not found\n");
  }
});

const wss = new WebSocketServer({ server: http, path: "/ws" });
wss.on("connection", (ws) => {
  const c: Conn = { ws, name: null, key: null, rooms: new Set(), token: "" };
  ws.on("message", (data, isBinary) => {
    if (!isBinary) return ws.close(1003);
    let f;
    try {
      f = fromBinary(ClientFrameSchema, new Uint8Array(data as Buffer));
    } catch {
      return send(c, { case: "error", value: { code: ErrorCode.BAD_FRAME, message: "undecodable" } });
    }
    const ref = f.ref;
    const err = (code: ErrorCode, message: string) => send(c, { case: "error", value: { code, message } }, ref);
    const k = f.kind;
    if (k.case === undefined) return err(ErrorCode.BAD_FRAME, "no kind");
    if (k.case !== "hello" && !c.name) return err(ErrorCode.NOT_AUTHENTICATED, "hello first");
    switch (k.case) {
      case "hello": {
        if (c.name) return err(ErrorCode.BAD_FRAME, "hello twice");
        const name = k.value.username.trim().normalize("NFC");
        if (badName(name, 32)) return err(ErrorCode.INVALID_USERNAME, "bad username");
        const holder = names.get(nameKey(name));
        const resumes = holder !== undefined && k.value.resumeToken !== "" && sameToken(holder.token, k.value.resumeToken);
        if (holder && !resumes) return err(ErrorCode.USERNAME_TAKEN, "username taken");
        c.name = name;
        c.key = nameKey(name);
        c.token = randomBytes(18).toString("base64url");
        names.set(c.key, c);
        if (holder) takeOver(c, holder);
        return send(c, { case: "welcome", value: { sessionId: crypto.randomUUID(), username: name, gatewayId: "mock", serverTimeMs: BigInt(Date.now()), limits: { maxTextBytes: 4096, maxRooms: 32, messagesPerSecond: 10, messageBurst: 20 }, resumeToken: c.token } }, ref);
      }
      case "join": {
        const room = k.value.room;
        if (badName(room, 64) || room !== room.trim()) return err(ErrorCode.INVALID_ROOM, "bad room");
        const all = history.get(room) ?? [];
        const since = k.value.sinceId;
        const key = (id: string) => id.split("-").map(BigInt) as [bigint, bigint];
        const after = (id: string) => {
          const [a, b] = key(id);
          const [x, y] = key(since);
          return a > x || (a === x && b > y);
        };
        const replay = since ? all.filter((m) => after(m.id)) : all.slice(-50);
        const fresh = !c.rooms.has(room);
        if (fresh) {
          for (const o of rooms.get(room) ?? []) send(o, { case: "presence", value: { room, username: c.name!, kind: PresenceChange_Kind.JOINED } });
          c.rooms.add(room);
          if (!rooms.has(room)) rooms.set(room, new Set());
          rooms.get(room)!.add(c);
        }
        return send(c, { case: "joined", value: { room, members: membersOf(room), history: replay } }, ref);
      }
      case "leave":
        if (!c.rooms.has(k.value.room)) return err(ErrorCode.NOT_IN_ROOM, "not in room");
        c.rooms.delete(k.value.room);
        leaveRoom(c, k.value.room);
        return send(c, { case: "left", value: { room: k.value.room } }, ref);
      case "send": {
        const { room, text, clientMsgId } = k.value;
        if (!c.rooms.has(room)) return err(ErrorCode.NOT_IN_ROOM, "not in room");
        if (text.trim() === "") return err(ErrorCode.EMPTY_MESSAGE, "empty");
        if (Buffer.byteLength(text) > 4096) return err(ErrorCode.MESSAGE_TOO_LARGE, "too large");
        const dk = `${c.key}\u0000${room}\u0000${clientMsgId}`;
        const dup = clientMsgId ? dedupe.get(dk) : undefined;
        if (dup) return send(c, { case: "ack", value: { id: dup.id, room, sentAtMs: dup.sentAtMs, duplicate: true } }, ref);
        const { id, ms } = nextId();
        const m = create(ChatMessageSchema, { id, room, username: c.name!, text, sentAtMs: BigInt(ms), clientMsgId });
        if (clientMsgId) dedupe.set(dk, m);
        const h = history.get(room) ?? [];
        h.push(m);
        history.set(room, h.slice(-1000));
        send(c, { case: "ack", value: { id, room, sentAtMs: BigInt(ms) } }, ref);
        for (const o of rooms.get(room) ?? []) send(o, { case: "message", value: m });
        return;
      }
      case "typing":
        if (!c.rooms.has(k.value.room)) return err(ErrorCode.NOT_IN_ROOM, "not in room");
        for (const o of rooms.get(k.value.room) ?? []) {
          if (o !== c) send(o, { case: "typing", value: { room: k.value.room, username: c.name!, active: k.value.active } });
        }
        return;
      case "fetchHistory": {
        const { room, beforeId, limit } = k.value;
        if (!c.rooms.has(room)) return err(ErrorCode.NOT_IN_ROOM, "not in room");
        const all = history.get(room) ?? [];
        const end = beforeId ? all.findIndex((m) => compareIds(m.id, beforeId) >= 0) : all.length;
        const upTo = end < 0 ? all.length : end;
        const n = Math.min(limit || 50, 200);
        const page = all.slice(Math.max(0, upTo - n), upTo);
        return send(c, { case: "history", value: { room, messages: page, hasMore: upTo - page.length > 0 } }, ref);
      }
      case "ping":
        return send(c, { case: "pong", value: { clientTimeMs: k.value.clientTimeMs, serverTimeMs: BigInt(Date.now()) } }, ref);
      default:
        return err(ErrorCode.BAD_FRAME, "unsupported");
    }
  });
  ws.on("close", () => {
    for (const r of c.rooms) leaveRoom(c, r);
    c.rooms.clear();
    if (c.key && names.get(c.key) === c) names.delete(c.key);
  });
});

http.listen(port, "127.0.0.1", () => console.log(`mock gateway on http://127.0.0.1:${port} serving ${root}`));
