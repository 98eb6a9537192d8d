// End-to-end test of the web client in headless Chromium (Debian's
// /usr/bin/chromium) driven by playwright-core.
//
// Runs against CHAT_URL (e.g. http://127.0.0.1:8080) when set. Otherwise it
// starts the gateway itself from CHAT_GATEWAY_BIN (default: the workspace's
// target/debug/chat-gateway when it exists) on a free port, serving web/dist,
// and waits for GET /healthz to answer 200. Extra gateway flags can be given
// in CHAT_GATEWAY_ARGS (split on spaces). Build the client first
// (`npm run test:browser` does).
//
// Screenshots go to test-artifacts/screenshots/ at the repository root.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { CHROMIUM_ARGS, startGateway, stopGateway, until as waitUntil } from "./support.mjs";
import { ErrorCode, presenceFrame, RawClient } from "./raw-client.ts";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const webDir = resolve(here, "..");
const repoRoot = resolve(webDir, "..");
const distDir = join(webDir, "dist");
const artifacts = join(repoRoot, "test-artifacts");
const shots = join(artifacts, "screenshots");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const WAIT = 20_000;

let baseUrl = process.env.CHAT_URL || "";
let gateway = null;
let browser = null;
let skipReason = "";

/** Waits for a condition, by default for up to this file's WAIT. */
function until(what, cond, timeoutMs = WAIT, everyMs = 100) {
  return waitUntil(what, cond, timeoutMs, everyMs);
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  if (!baseUrl) {
    const g = await startGateway({ repoRoot, distDir, logPath: join(artifacts, "browser-test-gateway.log") });
    if (g.skip) {
      skipReason = g.skip;
      return;
    }
    gateway = g.child;
    baseUrl = g.url;
  }
  baseUrl = baseUrl.replace(/\/+$/, "");
  if (process.env.CHAT_URL) {
    await until(`${baseUrl}/healthz`, async () => (await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(2_000) })).status === 200, 30_000);
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await stopGateway(gateway);
});

/** A page (at `path`, default "/") with error, dialog and console bookkeeping. */
async function openPage(viewport = { width: 1100, height: 760 }, extra = {}, path = "/") {
  const context = await browser.newContext({ viewport, ...extra });
  const page = await context.newPage();
  const info = { dialogs: [], pageErrors: [], consoleErrors: [] };
  page.on("dialog", (d) => {
    info.dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on("pageerror", (e) => info.pageErrors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") info.consoleErrors.push(m.text());
  });
  await page.goto(`${baseUrl}${path}`);
  await page.locator("#entry").waitFor({ state: "visible", timeout: WAIT });
  return { page, info, context };
}

async function joinRoom(page, username, room) {
  await page.locator("#username").fill(username);
  await page.locator("#room").fill(room);
  await page.locator("#join").click();
}

async function waitConnected(page, room) {
  await page.locator("#chat").waitFor({ state: "visible", timeout: WAIT });
  await page.waitForFunction(() => document.querySelector("#conn-state")?.textContent === "connected", null, { timeout: WAIT });
  assert.equal(await page.locator("#room-title").textContent(), room);
}

/** Waits until some element matching `selector` has exactly `text` as textContent. */
function waitForText(page, selector, text) {
  return page.waitForFunction(
    ([s, t]) => [...document.querySelectorAll(s)].some((e) => e.textContent === t),
    [selector, text],
    { timeout: WAIT },
  );
}

function members(page) {
  return page.$$eval("#members li", (lis) => lis.map((li) => li.textContent));
}

/**
 * What the presence lines say about `name`, one entry per line that names
 * them: "x joined", "x left", "x joined and left" or "x left and came back".
 * Read from each line's data-presence ({effect: [every name]}), as the text
 * names only a few.
 */
function presenceLines(page, name) {
  return page.$$eval(
    "#messages .event.presence",
    (els, n) => {
      const verb = { joined: "joined", left: "left", "joined-left": "joined and left", "left-joined": "left and came back" };
      const out = [];
      for (const e of els) {
        for (const [effect, names] of Object.entries(JSON.parse(e.dataset.presence || "{}"))) {
          if (names.includes(n)) out.push(`${n} ${verb[effect]}`);
        }
      }
      return out;
    },
    name,
  );
}

/** Every line's data-presence, parsed. */
function presenceData(page) {
  return page.$$eval("#messages .event.presence", (els) => els.map((e) => JSON.parse(e.dataset.presence || "{}")));
}

/** Records every value #conn-state[data-state] takes from now on; read with connStates(). */
function recordConnStates(page) {
  return page.evaluate(() => {
    const e = document.querySelector("#conn-state");
    window.__connStates = [e.getAttribute("data-state")];
    new MutationObserver(() => {
      const s = e.getAttribute("data-state");
      if (window.__connStates.at(-1) !== s) window.__connStates.push(s);
    }).observe(e, { attributes: true, attributeFilter: ["data-state"] });
  });
}

function connStates(page) {
  return page.evaluate(() => window.__connStates);
}

/** The count shown beside the member list. */
function memberCountShown(page) {
  return page.$eval('[data-testid="member-count"]', (e) => e.textContent);
}

/** The author shown on the confirmed message with exactly this text. */
function authorOf(page, text) {
  return page.$$eval(
    "#messages .msg:not(.pending)",
    (els, t) => els.find((e) => e.querySelector(".text")?.textContent === t)?.querySelector(".author")?.textContent ?? null,
    text,
  );
}

/** The name this page chats under: its own entry in the member list. */
function myName(page) {
  return page.$eval("#members li.me", (li) => li.textContent);
}

/** Counts the WebSockets a page opens. */
function countSockets(page) {
  const opened = { n: 0 };
  page.on("websocket", () => opened.n++);
  return opened;
}

describe("web client in Chromium", () => {
  test("two people chat; typing, presence, escaping, taken names", async (t) => {
    if (skipReason) {
      t.skip(skipReason);
      return;
    }
    const suffix = Math.random().toString(36).slice(2, 7);
    const room = `room-${suffix}`;
    const alice = `alice_${suffix}`;
    const bob = `bob_${suffix}`;

    // --- Alice joins.
    const A = await openPage();
    await A.page.screenshot({ path: join(shots, "entry.png") });
    await joinRoom(A.page, alice, room);
    await waitConnected(A.page, room);

    // --- Bob (on a phone-sized screen) sees the room offered on the entry screen, and joins.
    const B = await openPage({ width: 390, height: 780 }, { isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    await B.page.locator(`#rooms [data-room="${room}"]`).waitFor({ timeout: WAIT });
    assert.match(await B.page.locator(`#rooms [data-room="${room}"]`).textContent(), /1/);
    assert.equal(await B.page.$eval(`#room-options option[value="${room}"]`, (o) => o.value), room);
    await B.page.locator("#username").fill(bob);
    await B.page.screenshot({ path: join(shots, "entry-mobile.png") });
    await B.page.locator(`#rooms [data-room="${room}"]`).click(); // picks the room and joins
    await waitConnected(B.page, room);

    // --- Both see both in the member list; Alice sees Bob arrive.
    for (const p of [A.page, B.page]) {
      await until("both members listed", async () => {
        const m = await members(p);
        return m.includes(alice) && m.includes(bob);
      });
    }
    await waitForText(A.page, "#messages .event", `${bob} joined`);

    // --- Bob types: Alice sees the notice.
    await B.page.locator("#input").pressSequentially("hel");
    await A.page.waitForFunction((name) => document.querySelector("#typing")?.textContent?.includes(`${name} is typing`), bob, { timeout: WAIT });

    // --- Messages both ways.
    await B.page.locator("#input").fill("hello from bob");
    await B.page.locator("#input").press("Enter");
    await waitForText(A.page, "#messages .msg .text", "hello from bob");
    await waitForText(B.page, "#messages .msg.own:not(.pending) .text", "hello from bob");
    assert.equal(await B.page.locator("#input").inputValue(), "", "input cleared after sending");
    // The typing notice goes away when Bob's message arrives.
    await A.page.waitForFunction(() => document.querySelector("#typing")?.textContent === "", null, { timeout: WAIT });

    await A.page.locator("#input").fill("hi bob");
    await A.page.locator("#input").press("Enter");
    await waitForText(B.page, "#messages .msg .text", "hi bob");
    await waitForText(A.page, "#messages .msg.own:not(.pending) .text", "hi bob");

    // Each message shows author, time and its id.
    for (const p of [A.page, B.page]) {
      const rows = await p.$$eval("#messages .msg", (els) =>
        els.map((e) => ({
          id: e.getAttribute("data-id"),
          author: e.querySelector(".author")?.textContent,
          text: e.querySelector(".text")?.textContent,
          time: e.querySelector(".time")?.textContent,
          own: e.classList.contains("own"),
        })),
      );
      const bobs = rows.find((r) => r.text === "hello from bob");
      const alices = rows.find((r) => r.text === "hi bob");
      assert.ok(bobs && alices, JSON.stringify(rows));
      assert.equal(bobs.author, bob);
      assert.equal(alices.author, alice);
      for (const r of [bobs, alices]) {
        assert.match(r.id ?? "", /^\d+-\d+$/);
        assert.ok(r.time, "time shown");
      }
      assert.equal(bobs.own, p === B.page);
      assert.equal(alices.own, p === A.page);
      assert.ok(rows.indexOf(bobs) < rows.indexOf(alices), "id order");
    }

    // --- Markup in a message is shown as text, never run.
    const evil = "<img src=x onerror=alert(1)>";
    await A.page.locator("#input").fill(evil);
    await A.page.locator("#input").press("Enter");
    for (const p of [A.page, B.page]) {
      await waitForText(p, "#messages .msg:not(.pending) .text", evil);
      assert.equal(await p.locator("#messages img").count(), 0);
    }
    assert.deepEqual(A.info.dialogs, []);
    assert.deepEqual(B.info.dialogs, []);

    await A.page.screenshot({ path: join(shots, "chat.png") });
    await B.page.screenshot({ path: join(shots, "chat-mobile.png") });

    // --- A third person cannot take Alice's name, whatever its case.
    const C = await openPage();
    await joinRoom(C.page, alice.toUpperCase(), room);
    await C.page.locator("#entry-error").waitFor({ state: "visible", timeout: WAIT });
    assert.match(await C.page.locator("#entry-error").textContent(), /That name is taken/);
    assert.equal(await C.page.locator("#chat").isVisible(), false);
    assert.equal(await C.page.locator("#entry").isVisible(), true);
    await C.page.screenshot({ path: join(shots, "entry-name-taken.png") });

    // --- Names the server refuses are explained on the entry screen too.
    const entryErrorAfter = async (username, roomName, pattern) => {
      await C.page.evaluate(() => {
        document.querySelector("#entry-error").textContent = "";
      });
      await joinRoom(C.page, username, roomName);
      await C.page.waitForFunction(() => document.querySelector("#join")?.disabled === false && document.querySelector("#entry-error")?.textContent !== "", null, { timeout: WAIT });
      assert.match(await C.page.locator("#entry-error").textContent(), pattern);
      assert.equal(await C.page.locator("#chat").isVisible(), false);
    };
    await entryErrorAfter("bad\u202ename", room, /name is not allowed/); // a format character (Cf)
    await entryErrorAfter(`carol_${suffix}`, "ro\u200bom", /room name is not allowed/);

    // --- Bob leaves: Alice sees it, Bob is back on the entry screen.
    await B.page.locator("#leave").click();
    await B.page.locator("#entry").waitFor({ state: "visible", timeout: WAIT });
    await waitForText(A.page, "#messages .event", `${bob} left`);
    await until("bob gone from the member list", async () => !(await members(A.page)).includes(bob));

    for (const x of [A, B, C]) {
      assert.deepEqual(x.info.pageErrors, [], "no uncaught errors in the page");
      assert.deepEqual(x.info.dialogs, []);
    }
    const csp = [...A.info.consoleErrors, ...B.info.consoleErrors].filter((m) => /Content Security Policy/i.test(m));
    assert.deepEqual(csp, [], "no CSP violations");
    for (const x of [A, B, C]) await x.context.close();
  });

  test("a reload keeps the name; a second tab with the same token takes over and the first one says so", async (t) => {
    if (skipReason) {
      t.skip(skipReason);
      return;
    }
    const suffix = Math.random().toString(36).slice(2, 7);
    const room = `resume-${suffix}`;
    const alice = `alice_${suffix}`;
    const bob = `bob_${suffix}`;

    const A = await openPage();
    await joinRoom(A.page, alice, room);
    await waitConnected(A.page, room);
    const B = await openPage();
    await joinRoom(B.page, bob, room);
    await waitConnected(B.page, room);
    await waitForText(A.page, "#messages .event", `${bob} joined`);
    const stored = await A.page.evaluate(() => JSON.parse(sessionStorage.getItem("chat.resume") ?? "null"));
    assert.equal(stored?.username, alice, "the resume token is kept in the tab's sessionStorage with its name");
    assert.ok(stored?.token, "a Welcome gave a resume token");

    // --- A reload goes straight back into the room under the same name: the
    // new page's Hello carries the token, so the name is handed over even if
    // the old page's connection is not gone yet (no USERNAME_TAKEN).
    await A.page.reload();
    await A.page.waitForFunction(
      () => document.querySelector("#conn-state")?.textContent === "connected" || document.querySelector("#entry-error")?.hidden === false,
      null,
      { timeout: WAIT },
    );
    assert.equal(await A.page.locator("#entry-error").isVisible(), false, `no entry error after the reload: ${await A.page.locator("#entry-error").textContent()}`);
    await waitConnected(A.page, room);
    assert.equal(await myName(A.page), alice, "the same name after the reload");
    await A.page.locator("#input").fill("after the reload");
    await A.page.locator("#input").press("Enter");
    await waitForText(B.page, "#messages .msg:not(.pending) .text", "after the reload");
    assert.equal(await authorOf(B.page, "after the reload"), alice);
    assert.deepEqual(await members(B.page), [alice, bob].sort());
    await A.page.screenshot({ path: join(shots, "resume-reloaded.png") });
    // The old page's close (1001, going away) keeps Alice's presence for the
    // gateway's reconnect grace, and the new page took it over with its
    // token: Bob saw her neither leave nor come back.
    const seenAcrossReload = await presenceLines(B.page, alice);
    assert.deepEqual(seenAcrossReload, [], "no left/joined line about alice across the reload");

    // --- A second tab of the same browser with the first tab's sessionStorage
    // (as "Duplicate tab" does; sessionStorage is per tab) opens the same chat:
    // it takes the name over, and the first tab says the chat continued there.
    const tab1 = A.page;
    const tab1Sockets = countSockets(tab1);
    const storage = await tab1.evaluate(() => Object.entries(sessionStorage));
    const tab2 = await A.context.newPage();
    const tab2Errors = [];
    tab2.on("pageerror", (e) => tab2Errors.push(String(e)));
    await tab2.addInitScript((entries) => {
      if (location.protocol !== "http:" && location.protocol !== "https:") return; // about:blank has no storage
      for (const [k, v] of entries) sessionStorage.setItem(k, v);
    }, storage);
    await tab2.goto(`${baseUrl}/`);
    await waitConnected(tab2, room);
    assert.equal(await myName(tab2), alice, "the second tab has the name");

    await tab1.locator("#replaced").waitFor({ state: "visible", timeout: WAIT });
    assert.match(await tab1.locator("#replaced").textContent(), /continued in another tab or window/);
    assert.equal(await tab1.$eval("#conn-state", (e) => e.getAttribute("data-state")), "offline");
    assert.equal(await tab1.locator("#input").isDisabled(), true);
    await tab1.screenshot({ path: join(shots, "resume-replaced.png") });

    // The chat goes on in the second tab; the first one stays offline, without a new connection.
    await tab2.locator("#input").fill("from the second tab");
    await tab2.locator("#input").press("Enter");
    await waitForText(B.page, "#messages .msg:not(.pending) .text", "from the second tab");
    await waitForText(tab2, "#messages .msg.own:not(.pending) .text", "from the second tab");
    assert.equal(tab1Sockets.n, 0, "the replaced tab did not reconnect");
    assert.equal(await tab1.$eval("#conn-state", (e) => e.getAttribute("data-state")), "offline");
    assert.equal(await tab1.locator("#replaced").isVisible(), true);
    assert.equal(
      await tab1.locator("#messages .msg .text", { hasText: "from the second tab" }).count(),
      0,
      "the replaced tab gets nothing more",
    );

    // Bob did not see Alice leave or come back because of the hand-over.
    assert.deepEqual(await presenceLines(B.page, alice), seenAcrossReload);
    assert.deepEqual(await members(B.page), [alice, bob].sort());

    for (const x of [A, B]) {
      assert.deepEqual(x.info.pageErrors, [], "no uncaught errors in the page");
      assert.deepEqual(x.info.dialogs, []);
    }
    assert.deepEqual(tab2Errors, []);
    for (const x of [A, B]) await x.context.close();
  });

  test("a Join/Leave flood from raw sockets: the listener stays connected, the presence lines stay few, the member list ends true", async (t) => {
    if (skipReason) {
      t.skip(skipReason);
      return;
    }
    const suffix = Math.random().toString(36).slice(2, 7);
    const room = `flood-${suffix}`;
    const bob = `bob_${suffix}`;
    const B = await openPage();
    await joinRoom(B.page, bob, room);
    await waitConnected(B.page, room);
    await recordConnStates(B.page);
    const sockets = countSockets(B.page);

    // Four raw clients each fire 400 Join/Leave frames at once, without waiting for answers.
    const FLOODERS = 4;
    const FRAMES = 400;
    const wsUrl = `${baseUrl.replace(/^http/, "ws")}/ws`;
    const flooders = [];
    for (let i = 0; i < FLOODERS; i++) {
      const c = await RawClient.connect(wsUrl);
      const name = `flood${i}_${suffix}`;
      await c.hello(name);
      flooders.push({ c, name });
    }
    const lastRefs = flooders.map(({ c }) => {
      let ref = 0n;
      for (let k = 0; k < FRAMES; k++) ref = c.send(k % 2 === 0 ? { case: "join", value: { room, historyLimit: 1 } } : { case: "leave", value: { room } });
      return ref;
    });

    // Bob chats in the middle of it.
    await B.page.locator("#input").fill("during the flood");
    await B.page.locator("#input").press("Enter");
    await waitForText(B.page, "#messages .msg:not(.pending) .text", "during the flood");

    // Replies come in request order: the reply to the last frame means all are answered.
    await Promise.all(flooders.map(({ c }, i) => c.reply(lastRefs[i], WAIT)));
    const limited = flooders.map(({ c }) => c.frames.filter((f) => f.kind.case === "error").length);
    t.diagnostic(`frames refused (RATE_LIMITED) per flooder: ${limited.join(", ")} of ${FRAMES}`);

    // Then the even ones settle in the room and the odd ones out of it (retrying while rate-limited).
    for (const [i, { c }] of flooders.entries()) {
      const inRoom = i % 2 === 0;
      await until(`flood${i} ${inRoom ? "in" : "out of"} the room`, async () => {
        const f = await c.reply(c.send(inRoom ? { case: "join", value: { room, historyLimit: 1 } } : { case: "leave", value: { room } }));
        if (inRoom) return f.kind.case === "joined";
        return f.kind.case === "left" || (f.kind.case === "error" && f.kind.value.code === ErrorCode.NOT_IN_ROOM);
      }, WAIT, 200);
    }
    const present = flooders.filter((_, i) => i % 2 === 0).map((f) => f.name);
    const absent = flooders.filter((_, i) => i % 2 === 1).map((f) => f.name);

    // Bob's member list ends as the truth, sorted, with its count.
    const expected = [bob, ...present].sort();
    await until("Bob's member list to match the room", async () => JSON.stringify(await members(B.page)) === JSON.stringify(expected));
    await until("the member count", async () => (await memberCountShown(B.page)) === String(expected.length));
    assert.equal(await B.page.locator('[data-testid="member-count"]').isVisible(), true, "the count shows beside the member list");

    // What the lines say about each flooder ends as the truth: the last line naming them.
    await until("the presence lines to end true", async () => {
      for (const name of present) {
        const said = await presenceLines(B.page, name);
        if (!said.length || !/ (joined|left and came back)$/.test(said.at(-1))) return false;
      }
      for (const name of absent) {
        const said = await presenceLines(B.page, name);
        if (said.length && !/ (left|joined and left)$/.test(said.at(-1))) return false;
      }
      return true;
    });

    // Few lines for thousands of frames: one per run (Bob's message splits the flood into at most two).
    const lines = await B.page.$$eval("#messages .event", (els) => els.map((e) => ({ text: e.textContent, events: Number(e.dataset.events || 0) })));
    t.diagnostic(`Bob's presence lines: ${JSON.stringify(lines)}`);
    assert.ok(lines.length >= 1 && lines.length <= 3, `presence lines: ${lines.length}`);
    // Decorations (day dividers, the beginning-of-the-room marker) are not timeline lines.
    assert.ok((await B.page.$$eval("#messages > :not(.divider)", (els) => els.length)) <= 5, "the timeline did not grow with the flood");
    // No one is listed twice in a line.
    for (const data of await presenceData(B.page)) {
      const names = Object.values(data).flat();
      assert.equal(new Set(names).size, names.length, JSON.stringify(data));
    }

    // Bob stayed connected on the same socket all along.
    assert.deepEqual(await connStates(B.page), ["connected"]);
    assert.equal(sockets.n, 0, "no reconnect");
    assert.deepEqual(B.info.pageErrors, []);
    await B.page.screenshot({ path: join(shots, "presence-flood.png") });
    for (const { c } of flooders) c.close();
    await B.context.close();
  });

  test("hundreds of presence events a second pushed into a page: one line, a true member list, still chatting", async (t) => {
    if (skipReason) {
      t.skip(skipReason);
      return;
    }
    const suffix = Math.random().toString(36).slice(2, 7);
    const room = `ghosts-${suffix}`;
    const carol = `carol_${suffix}`;
    const C = await openPage({ width: 390, height: 780 }, { isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    // C's socket goes through a relay in the test, which can add frames of its own.
    let route = null;
    await C.page.routeWebSocket(
      (url) => url.pathname === "/ws",
      (ws) => {
        const server = ws.connectToServer();
        ws.onMessage((m) => server.send(m));
        server.onMessage((m) => ws.send(m));
        route = ws;
      },
    );
    await joinRoom(C.page, carol, room);
    await waitConnected(C.page, room);
    await recordConnStates(C.page);
    assert.ok(route, "the page's socket is relayed");

    // 600 people join, every odd one leaves again, and ghost0 leaves and comes back 100 times: 1,400 pushes at once.
    const N = 600;
    const ghost = (i) => `ghost${i}_${suffix}`;
    const frames = [];
    for (let i = 0; i < N; i++) frames.push(presenceFrame(room, ghost(i), "joined"));
    for (let i = 1; i < N; i += 2) frames.push(presenceFrame(room, ghost(i), "left"));
    for (let k = 0; k < 100; k++) frames.push(presenceFrame(room, ghost(0), "left"), presenceFrame(room, ghost(0), "joined"));
    const t0 = Date.now();
    for (const f of frames) route.send(f);

    const expectedCount = 1 + N / 2;
    await until("the member count", async () => (await memberCountShown(C.page)) === String(expectedCount));
    await until("the presence line to take every push in", async () =>
      (await C.page.$$eval("#messages .event.presence", (els) => els.reduce((n, e) => n + Number(e.dataset.events || 0), 0))) === frames.length,
    );
    t.diagnostic(`${frames.length} presence pushes taken in ${Date.now() - t0} ms`);

    const list = await members(C.page);
    assert.equal(list.length, expectedCount);
    assert.ok(list.includes(carol) && list.includes(ghost(0)) && list.includes(ghost(598)) && !list.includes(ghost(1)));
    const collator = new Intl.Collator(undefined, { sensitivity: "base", numeric: true });
    for (let i = 1; i < list.length; i++) assert.ok(collator.compare(list[i - 1], list[i]) <= 0, `sorted: ${list[i - 1]} before ${list[i]}`);

    const lines = await C.page.$$eval("#messages .event", (els) => els.map((e) => e.textContent));
    assert.deepEqual(lines, [`${ghost(0)}, ${ghost(2)} and ${N / 2 - 2} others joined; ${ghost(1)}, ${ghost(3)} and ${N / 2 - 2} others joined and left`]);
    const [data] = await presenceData(C.page);
    assert.equal(data.joined.length, N / 2);
    assert.equal(data["joined-left"].length, N / 2);
    assert.equal(new Set([...data.joined, ...data["joined-left"]]).size, N);

    // Still connected, and chatting works; a message then starts a new presence line.
    assert.deepEqual(await connStates(C.page), ["connected"]);
    await C.page.locator("#input").fill("still here");
    await C.page.locator("#input").press("Enter");
    await waitForText(C.page, "#messages .msg.own:not(.pending) .text", "still here");
    route.send(presenceFrame(room, ghost(1), "joined"));
    await waitForText(C.page, "#messages .event", `${ghost(1)} joined`);
    assert.equal(await C.page.locator("#messages .event").count(), 2);
    assert.equal(await C.page.locator("#messages > :not(.divider)").count(), 3);
    await C.page.screenshot({ path: join(shots, "presence-pushed-mobile.png") });
    assert.deepEqual(C.info.pageErrors, []);
    await C.context.close();
  });

  test("a malformed URL fragment is ignored: the entry screen works, and a reload still goes back into the chat", async (t) => {
    if (skipReason) {
      t.skip(skipReason);
      return;
    }
    const suffix = Math.random().toString(36).slice(2, 7);
    for (const fragment of ["#%", "#%E0%A4%A"]) {
      const P = await openPage(undefined, {}, `/${fragment}`);
      // The page booted: the default room is filled in, the name field has focus, rooms are polled.
      await P.page.waitForFunction(() => document.activeElement?.id === "username", null, { timeout: WAIT });
      assert.equal(await P.page.locator("#room").inputValue(), "lobby", `room for ${fragment}`);
      assert.equal(await P.page.locator("#chat").isVisible(), false);
      assert.deepEqual(P.info.pageErrors, [], `no uncaught error with ${fragment}`);
      await P.page.screenshot({ path: join(shots, "entry-malformed-fragment.png") });

      // Joining works, and so does a reload of the chat (the boot code runs to its end).
      const name = `frag_${suffix}_${fragment.length}`;
      const room = `frag-${suffix}`;
      await joinRoom(P.page, name, room);
      await waitConnected(P.page, room);
      await P.page.reload();
      await waitConnected(P.page, room);
      assert.equal(await myName(P.page), name);
      assert.equal(new URL(P.page.url()).hash, fragment, "the fragment is still there");
      assert.deepEqual(P.info.pageErrors, []);
      await P.context.close();
    }

    // A well-formed fragment names the room.
    const Q = await openPage(undefined, {}, "/#room=dev%20ops");
    assert.equal(await Q.page.locator("#room").inputValue(), "dev ops");
    await Q.context.close();
    const R = await openPage(undefined, {}, "/#sala%20%C3%A9");
    assert.equal(await R.page.locator("#room").inputValue(), "sala é");
    await R.context.close();
  });
});
