// Unit tests of the session / reconnect module, driven with a fake WebSocket
// and fake timers. Run with `npm test`.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ErrorCode, PresenceChange_Kind } from "../gen/chat/v1/chat_pb";
import { compareIds, parseId } from "../src/ids";
import {
  backoffDelay,
  ChatSession,
  HELLO_RETRY_CAP_MS,
  reconnectDelay,
  RESUME_STORAGE_KEY,
  type ConnState,
  type DisplayMessage,
  type SessionListener,
} from "../src/session";
import { FakeClock, FakeStorage, msg, SocketFactory } from "./fakes";

interface Harness {
  session: ChatSession;
  clock: FakeClock;
  sockets: SocketFactory;
  shown: DisplayMessage[];
  states: ConnState[];
  entryErrors: { code: ErrorCode | null; text: string }[];
  fatals: string[];
  replaced: string[];
  storage: FakeStorage;
  typing: string[][];
  resolved: string[];
  tokenRefusals: number;
  listener: SessionListener;
}

/** A session on fake sockets and timers; `storage` stands for the tab's sessionStorage (pass one on to "reload"). */
function harness(
  opts: { username?: string; room?: string; pingIntervalMs?: number; storage?: FakeStorage; authToken?: string } = {},
): Harness {
  const clock = new FakeClock();
  const sockets = new SocketFactory();
  const storage = opts.storage ?? new FakeStorage();
  let n = 0;
  const h: Partial<Harness> = { clock, sockets, storage, shown: [], states: [], entryErrors: [], fatals: [], replaced: [], typing: [], resolved: [], tokenRefusals: 0 };
  const listener: SessionListener = {
    onMessage: (m, index) => h.shown!.splice(index, 0, m),
    onState: (s) => h.states!.push(s),
    onEntryError: (code, text) => h.entryErrors!.push({ code, text }),
    onFatal: (t) => h.fatals!.push(t),
    onReplaced: (t) => h.replaced!.push(t),
    onTyping: (names) => h.typing!.push(names),
    onPendingResolved: (cmid) => h.resolved!.push(cmid),
    onTokenRefused: () => h.tokenRefusals!++,
  };
  h.listener = listener;
  h.session = new ChatSession({
    url: "ws://chat.test/ws",
    username: opts.username ?? "alice",
    room: opts.room ?? "lobby",
    authToken: opts.authToken,
    listener,
    socketFactory: sockets.create,
    clock,
    storage,
    uuid: () => `cmid-${++n}`,
    pingIntervalMs: opts.pingIntervalMs ?? 0,
  });
  return h as Harness;
}

/** Opens the current socket and answers Hello (issuing `resumeToken`) and Join like a server would. */
function handshake(h: Harness, history: ReturnType<typeof msg>[] = [], members = ["alice", "bob"], resumeToken = ""): void {
  const ws = h.sockets.current;
  ws.open();
  const hello = ws.last("hello");
  assert.ok(hello, "Hello sent after open");
  ws.push({ case: "welcome", value: { sessionId: "s1", username: hello.kind.value.username, gatewayId: "gw-1", resumeToken } }, hello.ref);
  const join = ws.last("join");
  assert.ok(join, "Join sent after Welcome");
  ws.push({ case: "joined", value: { room: join.kind.value.room, members, history } }, join.ref);
}

const ids = (h: Harness) => h.shown.map((m) => m.id);

describe("message ids", () => {
  test("parse and compare as the pair (ms, seq), never as strings", () => {
    assert.deepEqual(parseId("1732712345678-0"), [1732712345678n, 0n]);
    assert.equal(parseId("abc"), null);
    assert.equal(parseId("1-2-3"), null);
    assert.ok(compareIds("1700000000000-10", "1700000000000-9") > 0); // as strings it would be < 0
    assert.ok(compareIds("999-5", "1000-0") < 0); // as strings it would be > 0
    assert.equal(compareIds("5-5", "5-5"), 0);
    assert.ok(compareIds("18446744073709551615-1", "18446744073709551615-0") > 0); // beyond 2^53
  });
});

describe("backoff", () => {
  test("grows exponentially and is capped (full jitter)", () => {
    const top = () => 0.999999;
    const delays = Array.from({ length: 10 }, (_, i) => backoffDelay(i, top, 250, 10_000));
    assert.deepEqual(delays, [249, 499, 999, 1999, 3999, 7999, 9999, 9999, 9999, 9999]);
    assert.equal(backoffDelay(50, top, 250, 10_000), 9999);
    assert.equal(backoffDelay(3, () => 0, 250, 10_000), 0);
    assert.equal(backoffDelay(3, () => 0.5, 250, 10_000), 1000);
  });

  test("a reconnect goes out at once (0-100 ms of jitter), then backs off", () => {
    const top = () => 0.999999;
    const delays = Array.from({ length: 9 }, (_, i) => reconnectDelay(i, top, 100, 250, 10_000));
    assert.deepEqual(delays, [99, 249, 499, 999, 1999, 3999, 7999, 9999, 9999]);
    assert.equal(reconnectDelay(0, () => 0, 100, 250, 10_000), 0);
  });

  test("the first retry goes out at once, consecutive failures back off up to the cap, a join starts over", () => {
    const h = harness();
    h.session.start();
    handshake(h);
    for (let i = 0; i < 9; i++) {
      h.sockets.current.serverClose(1006);
      const before = h.sockets.sockets.length;
      h.clock.advance(h.session.backoffHistory[h.session.backoffHistory.length - 1]!);
      assert.equal(h.sockets.sockets.length, before + 1, "reconnected after the backoff delay");
    }
    // random() is 0.5: half of 100 ms at first, then half of 250, 500, 1000, ... capped at 10 s.
    assert.deepEqual(h.session.backoffHistory, [50, 125, 250, 500, 1000, 2000, 4000, 5000, 5000]);
    handshake(h);
    h.sockets.current.serverClose(1006);
    assert.equal(h.session.backoffHistory.at(-1), 50, "at once again after a successful join");
  });

  test("does not reconnect before the delay has passed", () => {
    const h = harness();
    h.clock.randoms = [0.999];
    h.session.start();
    handshake(h);
    h.sockets.current.serverClose(1006);
    assert.equal(h.sockets.sockets.length, 1);
    h.clock.advance(98);
    assert.equal(h.sockets.sockets.length, 1);
    h.clock.advance(1);
    assert.equal(h.sockets.sockets.length, 2, "the first retry within 100 ms");
    h.sockets.current.serverClose(1006); // that one failed: now back off
    h.clock.advance(248);
    assert.equal(h.sockets.sockets.length, 2);
    h.clock.advance(1);
    assert.equal(h.sockets.sockets.length, 3);
  });
});

describe("session", () => {
  test("Hello, then Join on Welcome, then the chat with its history", () => {
    const h = harness();
    h.session.start();
    const ws = h.sockets.current;
    assert.equal(ws.url, "ws://chat.test/ws");
    assert.equal(ws.binaryType, "arraybuffer");
    ws.open();
    assert.equal(ws.sent.length, 1);
    const hello = ws.last("hello")!;
    assert.equal(hello.kind.value.username, "alice");
    assert.equal(hello.kind.value.client, "web/0.1");
    assert.notEqual(hello.ref, 0n);
    ws.push({ case: "welcome", value: { username: "alice" } }, hello.ref);
    const join = ws.last("join")!;
    assert.equal(join.kind.value.room, "lobby");
    assert.equal(join.kind.value.sinceId, "");
    assert.notEqual(join.ref, hello.ref);
    ws.push({ case: "joined", value: { room: "lobby", members: ["bob", "alice"], history: [msg("10-0", "bob", "hi"), msg("11-0", "alice", "hey")] } }, join.ref);
    assert.equal(h.session.connState, "connected");
    assert.deepEqual(ids(h), ["10-0", "11-0"]);
    assert.deepEqual(h.session.members, ["alice", "bob"]);
    assert.equal(h.shown[1]!.own, true);
    assert.equal(h.shown[0]!.own, false);
  });

  test("resume uses since_id = the last displayed id", () => {
    const h = harness();
    h.session.start();
    handshake(h, [msg("100-0", "bob", "a"), msg("100-1", "bob", "b")]);
    h.sockets.current.push({ case: "message", value: msg("100-10", "bob", "c") });
    h.sockets.current.push({ case: "message", value: msg("100-9", "bob", "late") }); // smaller id, arrives later
    assert.deepEqual(ids(h), ["100-0", "100-1", "100-9", "100-10"]);

    h.sockets.current.serverClose(1006);
    assert.equal(h.session.connState, "reconnecting");
    h.clock.advance(10_000);
    const ws2 = h.sockets.current;
    assert.equal(h.sockets.sockets.length, 2);
    ws2.open();
    const hello = ws2.last("hello")!;
    assert.equal(hello.kind.value.username, "alice", "same username");
    ws2.push({ case: "welcome", value: { username: "alice" } }, hello.ref);
    const join = ws2.last("join")!;
    assert.equal(join.kind.value.room, "lobby");
    assert.equal(join.kind.value.sinceId, "100-10", "pair order, not string order (\"100-9\" > \"100-10\" as strings)");
  });

  test("Welcome.gateway_id is exposed, cleared while away, and updated by the resume", () => {
    const h = harness();
    const welcomes: { name: string; gatewayId: string; sessionId: string }[] = [];
    h.listener.onWelcome = (name, info) => welcomes.push({ name, ...info });
    h.session.start();
    assert.equal(h.session.gatewayId, "");
    handshake(h); // gw-1
    assert.equal(h.session.gatewayId, "gw-1");
    assert.deepEqual(welcomes, [{ name: "alice", gatewayId: "gw-1", sessionId: "s1" }]);

    h.sockets.current.serverClose(1006);
    assert.equal(h.session.gatewayId, "", "no gateway while reconnecting");
    h.clock.advance(10_000);
    const ws2 = h.sockets.current;
    ws2.open();
    ws2.push({ case: "error", value: { code: ErrorCode.USERNAME_TAKEN, message: "taken" } }, ws2.last("hello")!.ref);
    assert.equal(h.session.gatewayId, "", "no Welcome yet on the new connection");
    h.clock.advance(10_000);
    ws2.push({ case: "welcome", value: { sessionId: "s2", username: "alice", gatewayId: "gw-2" } }, ws2.last("hello")!.ref);
    assert.equal(h.session.gatewayId, "gw-2");
    assert.deepEqual(welcomes.at(-1), { name: "alice", gatewayId: "gw-2", sessionId: "s2" });

    h.session.stop();
    assert.equal(h.session.gatewayId, "");
  });

  test("replayed and duplicated messages are dropped by id, so nothing shows twice", () => {
    const h = harness();
    h.session.start();
    handshake(h, [msg("5-0", "bob", "one"), msg("6-0", "bob", "two")]);
    h.sockets.current.push({ case: "message", value: msg("6-0", "bob", "two") });
    h.sockets.current.push({ case: "message", value: msg("7-0", "bob", "three") });
    h.sockets.current.push({ case: "message", value: msg("7-0", "bob", "three") });
    assert.deepEqual(ids(h), ["5-0", "6-0", "7-0"]);

    h.sockets.current.serverClose(1001, "going away");
    h.clock.advance(10_000);
    // A server replay that overlaps what is shown already.
    handshake(h, [msg("6-0", "bob", "two"), msg("7-0", "bob", "three"), msg("8-0", "bob", "four")]);
    assert.deepEqual(ids(h), ["5-0", "6-0", "7-0", "8-0"]);
    assert.deepEqual(h.session.timeline.map((m) => m.id), ["5-0", "6-0", "7-0", "8-0"]);
  });

  test("display order follows the id pair", () => {
    const h = harness();
    h.session.start();
    handshake(h);
    const ws = h.sockets.current;
    for (const id of ["1700000000000-9", "999-5", "1700000000000-10", "1000-0", "1700000000000-0"]) {
      ws.push({ case: "message", value: msg(id, "bob", id) });
    }
    assert.deepEqual(ids(h), ["999-5", "1000-0", "1700000000000-0", "1700000000000-9", "1700000000000-10"]);
  });

  test("unacked messages are re-sent with the same client_msg_id after a reconnect, acked ones are not", () => {
    const h = harness();
    h.session.start();
    handshake(h);
    const ws1 = h.sockets.current;
    const a = h.session.send("first")!;
    const b = h.session.send("second")!;
    const c = h.session.send("third")!;
    const sends1 = ws1.framesOf("send");
    assert.deepEqual(sends1.map((f) => f.kind.value.clientMsgId), [a, b, c]);
    assert.equal(new Set(sends1.map((f) => f.ref)).size, 3, "each Send has its own ref");
    // Only "first" is acked before the connection drops.
    ws1.push({ case: "ack", value: { id: "50-0", room: "lobby", sentAtMs: 50n } }, sends1[0]!.ref);
    assert.deepEqual(h.resolved, [a]);
    assert.deepEqual(ids(h), ["50-0"]);
    assert.deepEqual(h.session.pending.map((p) => p.clientMsgId), [b, c]);

    ws1.serverClose(1006);
    // Written while away: queued, sent after the resume.
    const d = h.session.send("fourth")!;
    h.clock.advance(10_000);
    const ws2 = h.sockets.current;
    ws2.open();
    const hello = ws2.last("hello")!;
    ws2.push({ case: "welcome", value: { username: "alice" } }, hello.ref);
    const join = ws2.last("join")!;
    // "second" had been accepted (its push is in the replay); "third" and "fourth" had not.
    ws2.push(
      { case: "joined", value: { room: "lobby", members: ["alice"], history: [msg("50-0", "alice", "first", { clientMsgId: a }), msg("51-0", "alice", "second", { clientMsgId: b })] } },
      join.ref,
    );
    const resent = ws2.framesOf("send");
    assert.deepEqual(resent.map((f) => f.kind.value.clientMsgId), [c, d]);
    assert.deepEqual(resent.map((f) => f.kind.value.text), ["third", "fourth"]);
    assert.ok(ws2.sent.findIndex((f) => f.kind.case === "send") > ws2.sent.findIndex((f) => f.kind.case === "join"), "re-sent after Join");
    // The server answers the retry of an already accepted id as a duplicate: still shown once.
    ws2.push({ case: "ack", value: { id: "52-0", room: "lobby", sentAtMs: 52n, duplicate: true } }, resent[0]!.ref);
    ws2.push({ case: "message", value: msg("52-0", "alice", "third", { clientMsgId: c }) });
    ws2.push({ case: "message", value: msg("53-0", "alice", "fourth", { clientMsgId: d }) });
    ws2.push({ case: "ack", value: { id: "53-0", room: "lobby", sentAtMs: 53n } }, resent[1]!.ref);
    assert.deepEqual(ids(h), ["50-0", "51-0", "52-0", "53-0"]);
    assert.ok(h.shown.every((m) => m.own));
    assert.deepEqual(h.session.pending, []);
  });

  test("a room typed in decomposed form matches the server's NFC name", () => {
    const h = harness({ room: "cafe\u0301" });
    h.session.start();
    handshake(h);
    assert.equal(h.sockets.current.last("join")!.kind.value.room, "caf\u00e9");
    assert.equal(h.session.connState, "connected");
    h.sockets.current.push({ case: "message", value: msg("1-0", "bob", "salut", { room: "caf\u00e9" }) });
    assert.deepEqual(ids(h), ["1-0"]);
  });

  test("a message sent while connecting waits for the Join", () => {
    const h = harness();
    h.session.start();
    const cmid = h.session.send("early")!;
    assert.equal(h.sockets.current.framesOf("send").length, 0);
    handshake(h);
    assert.deepEqual(h.sockets.current.framesOf("send").map((f) => f.kind.value.clientMsgId), [cmid]);
  });

  test("an Ack overtaking older pushes does not move the resume point past them", () => {
    const h = harness();
    h.session.start();
    handshake(h, [msg("1-0", "bob", "x")]);
    const ws = h.sockets.current;
    h.session.send("mine");
    ws.push({ case: "ack", value: { id: "3-0", room: "lobby", sentAtMs: 3n } }, ws.last("send")!.ref);
    assert.deepEqual(ids(h), ["1-0", "3-0"]);
    ws.serverClose(1006); // the pushes of 2-0 and 3-0 were lost
    h.clock.advance(10_000);
    const ws2 = h.sockets.current;
    ws2.open();
    ws2.push({ case: "welcome", value: { username: "alice" } }, ws2.last("hello")!.ref);
    assert.equal(ws2.last("join")!.kind.value.sinceId, "1-0");
    ws2.push({ case: "joined", value: { room: "lobby", members: ["alice"], history: [msg("2-0", "bob", "y"), msg("3-0", "alice", "mine")] } }, ws2.last("join")!.ref);
    assert.deepEqual(ids(h), ["1-0", "2-0", "3-0"]);
  });

  test("USERNAME_TAKEN while resuming keeps retrying with backoff instead of giving up", () => {
    const h = harness();
    h.session.start();
    handshake(h);
    h.sockets.current.serverClose(1006);
    h.clock.advance(10_000);
    const ws = h.sockets.current;
    ws.open();
    for (let i = 0; i < 4; i++) {
      const hello = ws.last("hello")!;
      ws.push({ case: "error", value: { code: ErrorCode.USERNAME_TAKEN, message: "taken" } }, hello.ref);
      assert.equal(h.session.connState, "reconnecting");
      assert.equal(h.session.isStopped, false);
      h.clock.advance(10_000);
      assert.equal(ws.framesOf("hello").length, i + 2, "Hello retried");
    }
    assert.deepEqual(h.entryErrors, []);
    assert.ok(h.session.backoffHistory.length >= 5);
    // Waiting for our own name to free polls at most every HELLO_RETRY_CAP_MS.
    for (let i = 0; i < 6; i++) {
      const hello = ws.last("hello")!;
      ws.push({ case: "error", value: { code: ErrorCode.USERNAME_TAKEN, message: "taken" } }, hello.ref);
      assert.ok(h.session.backoffHistory.at(-1)! <= HELLO_RETRY_CAP_MS, "name retries are capped");
      h.clock.advance(HELLO_RETRY_CAP_MS);
    }
    const hello = ws.last("hello")!;
    ws.push({ case: "welcome", value: { username: "alice" } }, hello.ref);
    ws.push({ case: "joined", value: { room: "lobby", members: ["alice"] } }, ws.last("join")!.ref);
    assert.equal(h.session.connState, "connected");
  });

  test("USERNAME_TAKEN on the first join is an entry-screen error", () => {
    const h = harness({ username: "ALICE" });
    h.session.start();
    const ws = h.sockets.current;
    ws.open();
    ws.push({ case: "error", value: { code: ErrorCode.USERNAME_TAKEN, message: "username taken" } }, ws.last("hello")!.ref);
    assert.equal(h.entryErrors.length, 1);
    assert.equal(h.entryErrors[0]!.code, ErrorCode.USERNAME_TAKEN);
    assert.match(h.entryErrors[0]!.text, /That name is taken/);
    assert.equal(h.session.isStopped, true);
    assert.ok(ws.closedByClient);
    h.clock.advance(60_000);
    assert.equal(h.sockets.sockets.length, 1, "no reconnect");
  });

  test("INVALID_ROOM on the first join is an entry-screen error", () => {
    const h = harness({ room: " bad" });
    h.session.start();
    const ws = h.sockets.current;
    ws.open();
    ws.push({ case: "welcome", value: { username: "alice" } }, ws.last("hello")!.ref);
    ws.push({ case: "error", value: { code: ErrorCode.INVALID_ROOM, message: "bad room" } }, ws.last("join")!.ref);
    assert.equal(h.entryErrors[0]?.code, ErrorCode.INVALID_ROOM);
    assert.equal(h.session.isStopped, true);
  });

  test("a signed token goes in every Hello; its refusal asks for a new one and stops", () => {
    const h = harness({ authToken: "h.p.s" });
    h.session.start();
    const ws = h.sockets.current;
    ws.open();
    const hello = ws.last("hello")!;
    assert.equal(hello.kind.value.token, "h.p.s");
    ws.push({ case: "error", value: { code: ErrorCode.INVALID_TOKEN, message: "expired" } }, hello.ref);
    ws.serverClose(4003, "token invalid or expired");
    assert.ok(h.tokenRefusals >= 1, "asked for a new token");
    assert.equal(h.entryErrors[0]?.code, ErrorCode.INVALID_TOKEN);
    h.clock.advance(120_000);
    assert.equal(h.sockets.sockets.length, 1, "no reconnect on a refused token");
  });

  test("a token expiring while joined (close 4003) asks for a new one", () => {
    const h = harness({ authToken: "h.p.s" });
    h.session.start();
    handshake(h);
    assert.equal(h.tokenRefusals, 0);
    h.sockets.current.serverClose(4003, "token invalid or expired");
    assert.equal(h.tokenRefusals, 1);
    assert.equal(h.fatals.length, 1);
  });

  for (const code of [4001, 4003]) {
    test(`close code ${code} stops for good and says why`, () => {
      const h = harness();
      h.session.start();
      handshake(h);
      h.sockets.current.serverClose(code, "");
      assert.equal(h.session.connState, "offline");
      assert.equal(h.fatals.length, 1);
      h.clock.advance(120_000);
      assert.equal(h.sockets.sockets.length, 1, "no reconnect");
    });
  }

  test("a Reconnect frame moves to a new connection after after_ms and resumes", () => {
    const h = harness();
    h.session.start();
    handshake(h, [msg("7-3", "bob", "x")]);
    const ws1 = h.sockets.current;
    ws1.push({ case: "reconnect", value: { reason: "draining", afterMs: 1500 } });
    h.clock.advance(1499);
    assert.equal(h.sockets.sockets.length, 1);
    ws1.push({ case: "message", value: msg("7-4", "bob", "still here") }); // the old connection still delivers
    h.clock.advance(1);
    assert.equal(h.sockets.sockets.length, 2);
    assert.ok(ws1.closedByClient, "old connection closed by the client");
    const ws2 = h.sockets.current;
    ws2.open();
    ws2.push({ case: "welcome", value: { username: "alice" } }, ws2.last("hello")!.ref);
    assert.equal(ws2.last("join")!.kind.value.sinceId, "7-4");
    // The old connection's 1001 close, arriving late, changes nothing.
    ws1.serverClose(1001);
    assert.equal(h.sockets.sockets.length, 2);
  });

  test("a Send error that is final marks the message failed; RATE_LIMITED is retried with the same id", () => {
    const h = harness();
    const failed: string[] = [];
    h.listener.onPending = (p) => {
      if (p.status === "failed") failed.push(p.clientMsgId);
    };
    h.session.start();
    handshake(h);
    const ws = h.sockets.current;
    const a = h.session.send("too fast")!;
    ws.push({ case: "error", value: { code: ErrorCode.RATE_LIMITED, message: "slow down" } }, ws.last("send")!.ref);
    h.clock.advance(2_000);
    const sends = ws.framesOf("send");
    assert.equal(sends.length, 2);
    assert.equal(sends[1]!.kind.value.clientMsgId, a);
    const b = h.session.send("x".repeat(10))!;
    ws.push({ case: "error", value: { code: ErrorCode.MESSAGE_TOO_LARGE, message: "too large" } }, ws.last("send")!.ref);
    assert.deepEqual(failed, [b]);
    assert.deepEqual(h.session.pending.map((p) => p.clientMsgId), [a]);
  });

  test("pending messages are confirmed by the pushed ChatMessage matched by client_msg_id", () => {
    const h = harness();
    h.session.start();
    handshake(h);
    const ws = h.sockets.current;
    const cmid = h.session.send("hello")!;
    assert.equal(h.session.pending.length, 1);
    ws.push({ case: "message", value: msg("9-0", "alice", "hello", { clientMsgId: cmid }) });
    assert.deepEqual(h.resolved, [cmid]);
    assert.equal(h.session.pending.length, 0);
    ws.push({ case: "ack", value: { id: "9-0", room: "lobby", sentAtMs: 9n } }, ws.last("send")!.ref);
    assert.deepEqual(ids(h), ["9-0"]);
  });

  test("typing: throttled active=true, active=false after idle and on send; notices expire", () => {
    const h = harness();
    h.session.start();
    handshake(h);
    const ws = h.sockets.current;
    h.session.userTyping();
    h.session.userTyping();
    h.clock.advance(1000);
    h.session.userTyping();
    assert.deepEqual(ws.framesOf("typing").map((f) => f.kind.value.active), [true], "throttled");
    h.clock.advance(3000);
    h.session.userTyping();
    assert.deepEqual(ws.framesOf("typing").map((f) => f.kind.value.active), [true, true], "refreshed while typing");
    h.clock.advance(5000);
    assert.deepEqual(ws.framesOf("typing").map((f) => f.kind.value.active), [true, true, false], "idle");
    h.session.userTyping();
    h.session.send("done");
    assert.deepEqual(ws.framesOf("typing").map((f) => f.kind.value.active), [true, true, false, true, false], "stopped by send");

    ws.push({ case: "typing", value: { room: "lobby", username: "bob", active: true } });
    assert.deepEqual(h.typing.at(-1), ["bob"]);
    h.clock.advance(4999);
    assert.deepEqual(h.typing.at(-1), ["bob"]);
    h.clock.advance(1);
    assert.deepEqual(h.typing.at(-1), [], "expired after 5 s");
    ws.push({ case: "typing", value: { room: "lobby", username: "bob", active: true } });
    ws.push({ case: "message", value: msg("20-0", "bob", "sent it") });
    assert.deepEqual(h.typing.at(-1), [], "cleared by bob's message");
  });

  test("presence changes update the member list", () => {
    const h = harness();
    const events: string[] = [];
    h.listener.onPresence = (name, kind) => events.push(`${name} ${kind}`);
    h.session.start();
    handshake(h, [], ["alice"]);
    const ws = h.sockets.current;
    ws.push({ case: "presence", value: { room: "lobby", username: "carol", kind: PresenceChange_Kind.JOINED } });
    ws.push({ case: "presence", value: { room: "lobby", username: "Bob", kind: PresenceChange_Kind.JOINED } });
    assert.deepEqual(h.session.members, ["alice", "Bob", "carol"]);
    ws.push({ case: "presence", value: { room: "lobby", username: "carol", kind: PresenceChange_Kind.LEFT } });
    assert.deepEqual(h.session.members, ["alice", "Bob"]);
    assert.deepEqual(events, ["carol joined", "Bob joined", "carol left"]);
  });

  test("a connection that never opens is retried, then reported on the entry screen", () => {
    const h = harness();
    h.session.start();
    h.sockets.current.serverClose(1006);
    h.clock.advance(10_000);
    h.sockets.current.serverClose(1006);
    h.clock.advance(10_000);
    assert.equal(h.sockets.sockets.length, 3);
    h.sockets.current.serverClose(1006);
    assert.equal(h.entryErrors.length, 1);
    assert.equal(h.entryErrors[0]!.code, null);
    assert.equal(h.session.isStopped, true);
  });

  test("app-level Ping while joined; a silent connection is dropped and resumed", () => {
    const h = harness({ pingIntervalMs: 20_000 });
    h.session.start();
    handshake(h);
    const ws = h.sockets.current;
    h.clock.advance(20_000);
    const ping = ws.last("ping")!;
    assert.ok(ping);
    ws.push({ case: "pong", value: { clientTimeMs: ping.kind.value.clientTimeMs } }, ping.ref);
    h.clock.advance(20_000);
    h.clock.advance(20_000);
    assert.equal(ws.framesOf("ping").length, 3);
    h.clock.advance(20_000); // 60 s without a frame
    assert.ok(ws.closedByClient);
    assert.equal(h.session.connState, "reconnecting");
  });

  test("leave sends Leave and stops", () => {
    const h = harness();
    h.session.start();
    handshake(h);
    const ws = h.sockets.current;
    h.session.leave();
    assert.equal(ws.last("leave")!.kind.value.room, "lobby");
    assert.ok(ws.closedByClient);
    assert.equal(h.session.connState, "offline");
    assert.equal(h.clock.pendingTimers, 0);
  });
});

describe("resume tokens", () => {
  /** The stored resume record, parsed. */
  const stored = (h: Harness) => {
    const raw = h.storage.items.get(RESUME_STORAGE_KEY);
    return raw === undefined ? undefined : (JSON.parse(raw) as { username: string; token: string });
  };
  /** Closes the connection as a network failure would and lets the (immediate) retry open. */
  const dropAndRetry = (h: Harness) => {
    h.sockets.current.serverClose(1006);
    h.clock.advance(100);
    const ws = h.sockets.current;
    ws.open();
    return ws;
  };

  test("each Welcome's token is stored with its name and sent in the next Hello", () => {
    const h = harness();
    h.session.start();
    handshake(h, [], ["alice"], "t1");
    assert.equal(h.sockets.sockets[0]!.last("hello")!.kind.value.resumeToken, "", "nothing to resume at first");
    assert.deepEqual(stored(h), { username: "alice", token: "t1" });

    const ws2 = dropAndRetry(h);
    assert.equal(ws2.last("hello")!.kind.value.resumeToken, "t1");
    ws2.push({ case: "welcome", value: { username: "alice", resumeToken: "t2" } }, ws2.last("hello")!.ref);
    assert.deepEqual(stored(h), { username: "alice", token: "t2" }, "the spent token is replaced");
    ws2.push({ case: "joined", value: { room: "lobby", members: ["alice"] } }, ws2.last("join")!.ref);

    const ws3 = dropAndRetry(h);
    assert.equal(ws3.last("hello")!.kind.value.resumeToken, "t2");
  });

  test("the token goes with every Hello of a resume, also the retries after USERNAME_TAKEN", () => {
    const h = harness();
    h.session.start();
    handshake(h, [], ["alice"], "t1");
    const ws = dropAndRetry(h);
    ws.push({ case: "error", value: { code: ErrorCode.USERNAME_TAKEN, message: "taken" } }, ws.last("hello")!.ref);
    h.clock.advance(HELLO_RETRY_CAP_MS);
    assert.deepEqual(ws.framesOf("hello").map((f) => f.kind.value.resumeToken), ["t1", "t1"]);
  });

  test("a reload (a new session on the same storage) sends the stored token in its first Hello", () => {
    const before = harness();
    before.session.start();
    handshake(before, [], ["alice"], "t1");
    // The page reloads: the old connection may still be open, the new session starts from the tab's storage.
    const after = harness({ storage: before.storage });
    after.session.start();
    const ws = after.sockets.current;
    ws.open();
    assert.equal(ws.last("hello")!.kind.value.username, "alice");
    assert.equal(ws.last("hello")!.kind.value.resumeToken, "t1");
    ws.push({ case: "welcome", value: { username: "alice", resumeToken: "t2" } }, ws.last("hello")!.ref);
    ws.push({ case: "joined", value: { room: "lobby", members: ["alice", "bob"] } }, ws.last("join")!.ref);
    assert.equal(after.session.connState, "connected");
    assert.deepEqual(after.entryErrors, []);
    assert.deepEqual(stored(after), { username: "alice", token: "t2" });
  });

  test("the token is sent only for the name it was issued for (the same name in another case is the same)", () => {
    const alice = harness({ username: "Alice" });
    alice.session.start();
    handshake(alice, [], ["Alice"], "t1");

    const bob = harness({ username: "bob", storage: alice.storage });
    bob.session.start();
    bob.sockets.current.open();
    assert.equal(bob.sockets.current.last("hello")!.kind.value.resumeToken, "", "not for another name");

    const again = harness({ username: " ALICE ", storage: alice.storage });
    again.session.start();
    again.sockets.current.open();
    assert.equal(again.sockets.current.last("hello")!.kind.value.resumeToken, "t1");

    bob.sockets.current.push({ case: "welcome", value: { username: "bob", resumeToken: "b1" } }, bob.sockets.current.last("hello")!.ref);
    assert.deepEqual(stored(bob), { username: "bob", token: "b1" }, "the tab now holds bob's");
  });

  test("a Reconnect frame (drain) keeps its after_ms, and the new connection resumes with the token", () => {
    const h = harness();
    h.session.start();
    handshake(h, [], ["alice"], "t1");
    h.sockets.current.push({ case: "reconnect", value: { reason: "draining", afterMs: 3000 } });
    h.clock.advance(2999);
    assert.equal(h.sockets.sockets.length, 1);
    h.clock.advance(1);
    assert.equal(h.sockets.sockets.length, 2);
    h.sockets.current.open();
    assert.equal(h.sockets.current.last("hello")!.kind.value.resumeToken, "t1");
  });

  test("a Welcome without a token forgets the spent one", () => {
    const h = harness();
    h.session.start();
    handshake(h, [], ["alice"], "t1");
    const ws = dropAndRetry(h);
    ws.push({ case: "welcome", value: { username: "alice" } }, ws.last("hello")!.ref);
    ws.push({ case: "joined", value: { room: "lobby", members: ["alice"] } }, ws.last("join")!.ref);
    assert.equal(stored(h), undefined);
    assert.equal(dropAndRetry(h).last("hello")!.kind.value.resumeToken, "");
  });

  test("with storage blocked the token still lives in memory for reconnects", () => {
    const h = harness();
    h.storage.failing = true;
    h.session.start();
    handshake(h, [], ["alice"], "t1");
    assert.equal(h.session.connState, "connected");
    assert.equal(dropAndRetry(h).last("hello")!.kind.value.resumeToken, "t1");
  });

  test("a stored record that is not ours is ignored", () => {
    const storage = new FakeStorage();
    storage.items.set(RESUME_STORAGE_KEY, "{not json");
    const h = harness({ storage });
    h.session.start();
    h.sockets.current.open();
    assert.equal(h.sockets.current.last("hello")!.kind.value.resumeToken, "");
  });

  test("leave forgets the token", () => {
    const h = harness();
    h.session.start();
    handshake(h, [], ["alice"], "t1");
    h.session.leave();
    assert.equal(stored(h), undefined);
  });

  for (const how of ["Error SESSION_REPLACED, then close 4002", "close 4002 alone"] as const) {
    test(`replaced by another tab (${how}): says so, goes offline, forgets the token, never reconnects`, () => {
      const h = harness();
      h.session.start();
      handshake(h, [], ["alice"], "t1");
      const ws = h.sockets.current;
      if (how !== "close 4002 alone") {
        ws.push({ case: "error", value: { code: ErrorCode.SESSION_REPLACED, message: "replaced" } });
        assert.ok(ws.closedByClient, "the client lets go of the connection at once");
      }
      ws.serverClose(4002, "replaced");
      assert.equal(h.replaced.length, 1);
      assert.match(h.replaced[0]!, /continued in another tab or window/);
      assert.deepEqual(h.fatals, []);
      assert.deepEqual(h.entryErrors, []);
      assert.equal(h.session.connState, "offline");
      assert.equal(h.session.isStopped, true);
      assert.equal(stored(h), undefined, "the token was spent by the session that took over");
      assert.equal(h.session.send("still there?"), null);
      h.clock.advance(120_000);
      assert.equal(h.sockets.sockets.length, 1, "no reconnect");
      assert.equal(h.clock.pendingTimers, 0);
    });
  }

  test("replaced before the first Joined is an entry-screen error, without a reconnect", () => {
    const h = harness();
    h.session.start();
    const ws = h.sockets.current;
    ws.open();
    ws.push({ case: "welcome", value: { username: "alice", resumeToken: "t1" } }, ws.last("hello")!.ref);
    ws.serverClose(4002, "");
    assert.equal(h.entryErrors[0]?.code, ErrorCode.SESSION_REPLACED);
    assert.deepEqual(h.replaced, []);
    h.clock.advance(60_000);
    assert.equal(h.sockets.sockets.length, 1);
  });
});

describe("older pages (FetchHistory)", () => {
  test("pages backwards from the oldest id, inserts above, never moves the resume point, ends at has_more=false", () => {
    const h = harness();
    const older: { added: number; hasMore: boolean; failed?: boolean }[] = [];
    h.listener.onOlder = (info) => older.push(info);
    h.session.start();
    handshake(h, [msg("50-0", "bob", "m50"), msg("51-0", "bob", "m51")]);
    const ws = h.sockets.current;
    assert.equal(h.session.resumePoint, "51-0");

    assert.equal(h.session.fetchOlder(), true);
    assert.equal(h.session.fetchOlder(), false, "one page at a time");
    const f = ws.last("fetchHistory");
    assert.ok(f);
    assert.equal(f.kind.value.beforeId, "50-0");
    assert.equal(f.kind.value.room, "lobby");
    // The page overlaps a message already shown (and a live one arrives meanwhile): nothing twice.
    ws.push({ case: "message", value: msg("52-0", "bob", "live") });
    ws.push({ case: "history", value: { room: "lobby", messages: [msg("48-0", "bob", "m48"), msg("49-0", "bob", "m49"), msg("50-0", "bob", "m50")], hasMore: true } }, f.ref);
    assert.deepEqual(ids(h), ["48-0", "49-0", "50-0", "51-0", "52-0"]);
    assert.deepEqual(older, [{ added: 2, hasMore: true }]);
    assert.equal(h.session.resumePoint, "52-0", "older pages never move the resume point");

    // A refusal (rate limit) says so and lets the next scroll ask again.
    assert.equal(h.session.fetchOlder(), true);
    const g = ws.last("fetchHistory")!;
    assert.equal(g.kind.value.beforeId, "48-0");
    ws.push({ case: "error", value: { code: ErrorCode.RATE_LIMITED, message: "slow down" } }, g.ref);
    assert.deepEqual(older.at(-1), { added: 0, hasMore: true, failed: true });

    assert.equal(h.session.fetchOlder(), true);
    const last = ws.last("fetchHistory")!;
    ws.push({ case: "history", value: { room: "lobby", messages: [msg("47-0", "bob", "m47")], hasMore: false } }, last.ref);
    assert.equal(h.session.hasOlder, false);
    assert.equal(h.session.fetchOlder(), false, "the beginning of the room");
    assert.deepEqual(ids(h)[0], "47-0");
    assert.equal(h.session.resumePoint, "52-0");
  });

  test("not before joining, and an empty page is the beginning whatever has_more says", () => {
    const h = harness();
    assert.equal(h.session.fetchOlder(), false, "not joined");
    h.session.start();
    handshake(h);
    assert.equal(h.session.fetchOlder(), true);
    const f = h.sockets.current.last("fetchHistory")!;
    assert.equal(f.kind.value.beforeId, "", "an empty room asks from the newest");
    h.sockets.current.push({ case: "history", value: { room: "lobby", messages: [], hasMore: true } }, f.ref);
    assert.equal(h.session.hasOlder, false);
  });
});
