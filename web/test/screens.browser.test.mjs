// End-to-end tests of the chat screen people expect (issue 15), in headless
// Chromium on a real gateway: languages, scrollback through FetchHistory,
// day dividers and grouping, unread counts and mentions, themes, keyboard
// use, the invite link, and an axe-core audit of both screens in both
// themes. Also writes the README's screenshots (test-artifacts/screenshots/
// screen-*.png; copied to web/screenshots/ by hand when the look changes).
//
// Runs against CHAT_URL when set, else starts CHAT_GATEWAY_BIN (see
// support.mjs); skipped when there is neither.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { readFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { RawClient } from "./raw-client.ts";
import { CHROMIUM_ARGS, startGateway, stopGateway, until as waitUntil } from "./support.mjs";
import { compareIds } from "../src/ids.ts";

const here = dirname(fileURLToPath(import.meta.url));
const webDir = resolve(here, "..");
const repoRoot = resolve(webDir, "..");
const shots = join(repoRoot, "test-artifacts", "screenshots");
const WAIT = 20_000;
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const DESKTOP = { viewport: { width: 1100, height: 760 } };
const PHONE = { viewport: { width: 390, height: 780 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

let baseUrl = (process.env.CHAT_URL || "").replace(/\/+$/, "");
let gateway = null;
let browser = null;
let skipReason = "";

const until = (what, cond, timeoutMs = WAIT, everyMs = 100) => waitUntil(what, cond, timeoutMs, everyMs);
const suffix = () => Math.random().toString(36).slice(2, 7);

before(async () => {
  mkdirSync(shots, { recursive: true });
  if (!baseUrl) {
    const g = await startGateway({ repoRoot, distDir: join(webDir, "dist"), logPath: join(repoRoot, "test-artifacts", "screens-test-gateway.log") });
    if (g.skip) {
      skipReason = g.skip;
      return;
    }
    gateway = g.child;
    baseUrl = g.url;
  }
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium", args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await stopGateway(gateway);
});

/** A page at `path` in a fresh context (`opts`: viewport, locale, colorScheme, ...). */
async function open(opts = {}, path = "/", init = null) {
  const context = await browser.newContext({ ...DESKTOP, ...opts });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${baseUrl}${path}`);
  await page.locator("#entry").waitFor({ state: "visible", timeout: WAIT });
  return { page, context, errors };
}

async function enter(page, name, room) {
  await page.locator("#username").fill(name);
  await page.locator("#room").fill(room);
  await page.locator("#join").click();
  await page.locator("#chat").waitFor({ state: "visible", timeout: WAIT });
  await page.waitForFunction(() => document.querySelector("#conn-state")?.dataset.state === "connected", null, { timeout: WAIT });
}

/** Raw protocol clients that joined `room` (each may send up to its burst of 20 at once). */
async function rawMembers(room, names) {
  const wsUrl = `${baseUrl.replace(/^http/, "ws")}/ws`;
  const out = [];
  for (const name of names) {
    const c = await RawClient.connect(wsUrl);
    await c.hello(name);
    const f = await c.reply(c.send({ case: "join", value: { room, historyLimit: 1 } }));
    assert.equal(f.kind.case, "joined", `${name} joined`);
    out.push(c);
  }
  return out;
}

/** Sends `text` from a raw client and returns the acknowledged id. */
async function say(c, room, text) {
  const f = await c.reply(c.send({ case: "send", value: { room, text, clientMsgId: `${text}-${suffix()}` } }));
  assert.equal(f.kind.case, "ack", `${text}: ${f.kind.case} ${JSON.stringify(f.kind.value, (_, v) => (typeof v === "bigint" ? String(v) : v))}`);
  return f.kind.value.id;
}

/**
 * Headless Chromium never hides a page (another tab in front, a minimised
 * window: still "visible"), so this test stands in for the tab switch: the
 * page's document reports what window.__setHidden says and gets the
 * visibilitychange event, as a browser does when its tab goes to the back.
 */
function visibilitySwitch() {
  let hidden = false;
  Object.defineProperty(Document.prototype, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  window.__setHidden = (h) => {
    hidden = h;
    document.dispatchEvent(new Event("visibilitychange"));
  };
}

/** Runs axe-core in the page; the serious and critical violations, described. */
async function axeProblems(page) {
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
  return result.filter((v) => v.impact === "serious" || v.impact === "critical");
}

function bodyBackground(page) {
  return page.evaluate(() => getComputedStyle(document.querySelector("#entry:not([hidden]), #messages")).backgroundColor);
}

describe("the chat screen people expect", () => {
  test("a pt-BR browser sees Portuguese, an English one English; the switch works on both screens and is remembered", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const pt = await open({ locale: "pt-BR" });
    assert.equal(await pt.page.locator("html").getAttribute("lang"), "pt-BR");
    assert.equal(await pt.page.locator("#join").textContent(), "Entrar");
    assert.equal(await pt.page.locator("#username").getAttribute("placeholder"), "ex.: alice");
    assert.equal(await pt.page.locator('[data-testid="language"]').inputValue(), "pt-BR");
    assert.deepEqual(await pt.page.$$eval('[data-testid="language"] option', (os) => os.map((o) => o.value)), ["pt-BR", "en"]);
    assert.deepEqual(await pt.page.$$eval('[data-testid="theme"] option', (os) => os.map((o) => o.value)), ["light", "dark", "system"]);

    const en = await open({ locale: "en-US" });
    assert.equal(await en.page.locator("html").getAttribute("lang"), "en");
    assert.equal(await en.page.locator("#join").textContent(), "Join");
    assert.equal(await en.page.locator("#username").getAttribute("placeholder"), "e.g. alice");

    // The switch on the entry screen, remembered across a reload.
    await en.page.locator('[data-testid="language"]').selectOption("pt-BR");
    assert.equal(await en.page.locator("#join").textContent(), "Entrar");
    assert.equal(await en.page.locator("html").getAttribute("lang"), "pt-BR");
    await en.page.reload();
    await en.page.locator("#entry").waitFor({ state: "visible" });
    assert.equal(await en.page.locator("#join").textContent(), "Entrar");

    // In the chat: Portuguese, then English through the settings (the same switch).
    const room = `idioma-${suffix()}`;
    await enter(en.page, `ana_${suffix()}`, room);
    assert.equal(await en.page.locator("#conn-state").textContent(), "conectado");
    assert.equal(await en.page.locator("#input").getAttribute("placeholder"), "Escreva uma mensagem…");
    assert.equal(await en.page.locator("#messages").getAttribute("aria-label"), "Mensagens");
    await en.page.locator('[data-testid="settings"]').click();
    await en.page.locator('[data-testid="language"]').selectOption("en");
    assert.equal(await en.page.locator("#conn-state").textContent(), "connected");
    assert.equal(await en.page.locator("#send").textContent(), "Send");
    assert.equal(await en.page.locator("html").getAttribute("lang"), "en");
    await en.page.keyboard.press("Escape");
    assert.equal(await en.page.locator('[data-testid="settings-panel"]').isHidden(), true);
    assert.equal(await en.page.evaluate(() => document.activeElement?.id), "settings", "focus back on the settings button");
    assert.deepEqual([...pt.errors, ...en.errors], []);
    await pt.context.close();
    await en.context.close();
  });

  test("150 messages: a new member scrolls to the top and reaches the first, in order, without duplicates", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const room = `historia-${suffix()}`;
    const s = suffix();
    // Eight raw members send 150 messages between them (each within its burst).
    const writers = await rawMembers(room, Array.from({ length: 8 }, (_, i) => `w${i}_${s}`));
    const sent = await Promise.all(
      writers.map(async (c, w) => {
        const ids = [];
        for (let k = w; k < 150; k += 8) ids.push([await say(c, room, `m${String(k).padStart(3, "0")}`), `m${String(k).padStart(3, "0")}`]);
        return ids;
      }),
    );
    const expected = sent.flat().sort((a, b) => compareIds(a[0], b[0]));
    assert.equal(expected.length, 150);

    const P = await open({ viewport: { width: 900, height: 700 } });
    await enter(P.page, `reader_${s}`, room);
    const shown = () => P.page.$$eval("#messages .msg[data-id]", (els) => els.map((e) => [e.dataset.id, e.querySelector(".text").textContent]));
    await until("the last messages", async () => (await shown()).length >= 50);
    assert.equal(await P.page.locator('[data-testid="room-start"]').count(), 0, "not at the beginning yet");

    // Scroll to the top: an older page comes in above and the reading position stays.
    const before = await P.page.evaluate(() => {
      const m = document.querySelector("#messages");
      m.scrollTop = 0;
      const first = m.querySelector(".msg[data-id]");
      return { id: first.dataset.id, top: first.getBoundingClientRect().top, count: m.querySelectorAll(".msg[data-id]").length };
    });
    await until("an older page", async () => (await shown()).length > before.count);
    const afterTop = await P.page.evaluate((id) => document.querySelector(`#messages [data-id="${id}"]`).getBoundingClientRect().top, before.id);
    assert.ok(Math.abs(afterTop - before.top) <= 2, `the message at the top stayed put (${before.top} -> ${afterTop})`);

    // Keep scrolling up until the beginning of the room.
    await until("the beginning of the room", async () => {
      await P.page.evaluate(() => (document.querySelector("#messages").scrollTop = 0));
      return (await P.page.locator('[data-testid="room-start"]').count()) === 1;
    }, 30_000, 250);
    assert.equal(await P.page.locator('[data-testid="announcer"]').textContent(), "", "the history is not announced");
    // A live message after paging: shown once, at the end, and announced politely.
    const live = await say(writers[0], room, "live after paging");
    await until("the live message", async () => (await shown()).some(([id]) => id === live));
    const all = await shown();
    assert.deepEqual(all, [...expected, [live, "live after paging"]], "every message once, in id order");
    assert.equal(await P.page.locator('[data-testid="announcer"]').textContent(), `w0_${s}: live after paging`);
    assert.equal(await P.page.locator('[data-testid="announcer"]').getAttribute("aria-live"), "polite");
    assert.equal(await P.page.$eval("#messages", (m) => m.firstElementChild?.dataset.testid), "room-start");
    // One day: one divider; consecutive messages of one writer grouped, each still saying its author to screen readers.
    assert.deepEqual(await P.page.$$eval('#messages [data-testid="day"]', (els) => els.map((e) => e.textContent)), ["Today"]);
    assert.ok((await P.page.locator("#messages .msg.cont").count()) > 0, "grouped messages");
    assert.equal(await P.page.locator("#messages .msg.cont .author").first().textContent().then(Boolean), true);
    // Full timestamp on keyboard focus: Arrow keys move through the messages.
    await P.page.locator("#messages").focus();
    await P.page.keyboard.press("ArrowUp");
    const full = await P.page.evaluate(() => {
      const f = document.activeElement?.querySelector(".full-time");
      return f ? { text: f.textContent, shown: getComputedStyle(f).display !== "none" } : null;
    });
    assert.ok(full?.shown && /\d{4}/.test(full.text), `full timestamp on focus: ${JSON.stringify(full)}`);
    assert.deepEqual(P.errors, []);
    for (const c of writers) c.close();
    await P.context.close();
  });

  test("while the page is hidden the title counts new messages, an unread line marks them, and a mention is highlighted and notified", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const room = `sistemas-${suffix()}`;
    const s = suffix();
    const me = `Bia_${s}`;
    const P = await open({ locale: "pt-BR" }, "/", visibilitySwitch);
    await P.context.grantPermissions(["notifications"], { origin: baseUrl });
    // Records the notifications the page shows (the real Notification still runs).
    await P.page.evaluate(() => {
      const Real = window.Notification;
      window.__notes = [];
      window.Notification = class extends Real {
        constructor(title, opts) {
          super(title, opts);
          window.__notes.push({ title, body: opts?.body });
        }
      };
    });
    await enter(P.page, me, room);
    const [other] = await rawMembers(room, [`caio_${s}`]);
    await say(other, room, "antes");
    await P.page.locator("#messages .msg .text", { hasText: "antes" }).waitFor();
    assert.equal(await P.page.title(), room);

    // Another tab comes to the front: this one is hidden.
    await P.page.evaluate(() => window.__setHidden(true));
    await say(other, room, "um");
    await say(other, room, "dois");
    await say(other, room, `ei @${me.toLowerCase()}, olha isso`);
    await until("the title to count 3", async () => (await P.page.title()) === `(3) ${room}`);
    const unreadBefore = await P.page.$eval('[data-testid="unread-line"]', (l) => l.nextElementSibling?.querySelector(".text")?.textContent);
    assert.equal(unreadBefore, "um", "the unread line is where the reader left off");
    await until("a notification for the mention", () => P.page.evaluate(() => window.__notes.length === 1));
    const [note] = await P.page.evaluate(() => window.__notes);
    assert.equal(note.title, `caio_${s} mencionou você em ${room}`);
    // The mention is highlighted, as text.
    const mark = await P.page.$eval("#messages .msg.mentions-me mark.mention", (m) => m.textContent);
    assert.equal(mark, `@${me.toLowerCase()}`);
    // Back to this tab: the count goes, the line stays.
    await P.page.evaluate(() => window.__setHidden(false));
    await until("the title without a count", async () => (await P.page.title()) === room);
    assert.equal(await P.page.locator('[data-testid="unread-line"]').count(), 1);
    assert.deepEqual(P.errors, []);
    other.close();
    await P.context.close();
  });

  test("dark mode by prefers-color-scheme and by the switch (remembered)", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const DARK = "rgb(17, 19, 28)";
    const LIGHT = "rgb(244, 245, 251)";
    const D = await open({ colorScheme: "dark" });
    assert.equal(await D.page.locator('[data-testid="theme"]').inputValue(), "system");
    assert.equal(await bodyBackground(D.page), DARK, "the system's dark");
    await D.page.locator('[data-testid="theme"]').selectOption("light");
    assert.equal(await bodyBackground(D.page), LIGHT);
    await D.page.reload();
    await D.page.locator("#entry").waitFor({ state: "visible" });
    assert.equal(await D.page.locator('[data-testid="theme"]').inputValue(), "light", "remembered");
    assert.equal(await bodyBackground(D.page), LIGHT);
    await D.page.locator('[data-testid="theme"]').selectOption("system");
    assert.equal(await bodyBackground(D.page), DARK);
    const L = await open({ colorScheme: "light" });
    assert.equal(await bodyBackground(L.page), LIGHT);
    await L.page.locator('[data-testid="theme"]').selectOption("dark");
    assert.equal(await bodyBackground(L.page), DARK);
    await D.context.close();
    await L.context.close();
  });

  test("keyboard: Enter joins and sends, Esc closes the member panel; the invite link names the room", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const room = `sala ${suffix()}`;
    const P = await open(PHONE);
    await P.context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: baseUrl });
    await P.page.locator("#username").focus();
    await P.page.keyboard.type(`teclado_${suffix()}`);
    await P.page.keyboard.press("Tab");
    assert.equal(await P.page.evaluate(() => document.activeElement?.id), "room");
    await P.page.keyboard.press("ControlOrMeta+a");
    await P.page.keyboard.type(room);
    await P.page.keyboard.press("Enter");
    await P.page.waitForFunction(() => document.querySelector("#conn-state")?.dataset.state === "connected", null, { timeout: WAIT });
    assert.equal(await P.page.evaluate(() => document.activeElement?.id), "input", "focus moves to the message input");
    await P.page.keyboard.type("pelo teclado");
    await P.page.keyboard.press("Enter");
    await P.page.locator("#messages .msg.own:not(.pending) .text", { hasText: "pelo teclado" }).waitFor();

    await P.page.locator("#members-toggle").focus();
    await P.page.keyboard.press("Enter");
    assert.equal(await P.page.locator("#members-panel").isVisible(), true);
    await P.page.keyboard.press("Escape");
    assert.equal(await P.page.locator("#members-panel").isVisible(), false);
    assert.equal(await P.page.evaluate(() => document.activeElement?.id), "members-toggle");

    await P.page.locator('[data-testid="invite"]').click();
    const url = `${baseUrl}/#room=${encodeURIComponent(room)}`;
    await until("the invite link on the clipboard", async () => (await P.page.evaluate(() => navigator.clipboard.readText())) === url);
    // The link opens the entry screen with the room filled in.
    const Q = await open(DESKTOP, url.slice(baseUrl.length));
    assert.equal(await Q.page.locator("#room").inputValue(), room);
    assert.deepEqual([...P.errors, ...Q.errors], []);
    await P.context.close();
    await Q.context.close();
  });

  test("axe-core: no serious or critical violation on either screen in either theme (and the README's screenshots)", async (t) => {
    if (skipReason) return t.skip(skipReason);
    // Plain names on this test's own gateway make tidy screenshots; unique ones on a shared CHAT_URL.
    const s = process.env.CHAT_URL ? `_${suffix()}` : "";
    const room = `sistemas-distribuidos${s}`;
    const [other] = await rawMembers(room, [`Rui${s}`]);
    await say(other, room, "Bom dia! Alguém viu a aula de ontem?");
    await say(other, room, `@ana${s} você tem os slides?`);
    const found = {};
    for (const [size, opts] of [["desktop", DESKTOP], ["phone", PHONE]]) {
      for (const theme of ["light", "dark"]) {
        const P = await open({ ...opts, locale: "pt-BR", colorScheme: theme });
        await P.page.locator('[data-testid="username"]').fill(`Ana${s}`);
        found[`entry ${theme} ${size}`] = await axeProblems(P.page);
        await P.page.screenshot({ path: join(shots, `screen-entry-${theme}-${size}.png`) });
        await P.page.locator("#room").fill(room);
        await P.page.locator("#join").click();
        await P.page.waitForFunction(() => document.querySelector("#conn-state")?.dataset.state === "connected", null, { timeout: WAIT });
        await P.page.locator('[data-testid="room-start"]').waitFor({ timeout: WAIT });
        if (theme === "light" && size === "desktop") {
          await P.page.locator("#input").fill("Tenho sim, vou mandar aqui.");
          await P.page.locator("#input").press("Enter");
        }
        await P.page.locator("#messages .msg.own:not(.pending)").first().waitFor({ timeout: WAIT });
        await P.page.locator("#input").fill("");
        found[`chat ${theme} ${size}`] = await axeProblems(P.page);
        await P.page.screenshot({ path: join(shots, `screen-chat-${theme}-${size}.png`) });
        // The settings and, on a phone, the member panel opened over the chat.
        await P.page.locator('[data-testid="settings"]').click();
        if (size === "phone") await P.page.locator("#members-toggle").click();
        found[`chat ${theme} ${size}, panels open`] = await axeProblems(P.page);
        await P.page.keyboard.press("Escape");
        // Leave (a goodbye frees the name at once) so that the next page can take it.
        await P.page.locator("#leave").click();
        await P.page.locator("#entry").waitFor({ state: "visible", timeout: WAIT });
        assert.deepEqual(P.errors, []);
        await P.context.close();
      }
    }
    t.diagnostic(`axe serious/critical: ${JSON.stringify(found)}`);
    for (const [where, problems] of Object.entries(found)) assert.deepEqual(problems, [], where);
    other.close();
  });
});
