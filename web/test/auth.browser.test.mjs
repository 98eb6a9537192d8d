// End-to-end test of signed identities in headless Chromium: a gateway
// started here with --auth-jwt-secret-file (HS256), tokens minted here with
// the same secret, handed to the page in the URL fragment (#token=...). The
// page sends the token in Hello, the gateway names the person, and a refused
// token asks for a new one with a reload button.
//
// Always starts its own gateway (CHAT_URL is not used: the gateway must
// know the test's secret); skipped when there is no gateway binary.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { CHROMIUM_ARGS, startGateway, stopGateway, until as waitUntil } from "./support.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const webDir = resolve(here, "..");
const repoRoot = resolve(webDir, "..");
const artifacts = join(repoRoot, "test-artifacts");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const WAIT = 20_000;
const SECRET = "browser-test-secret-0123456789abcdef0123456789";

let baseUrl = "";
let gateway = null;
let browser = null;
let skipReason = "";

const until = (what, cond, timeoutMs = WAIT) => waitUntil(what, cond, timeoutMs);

/** An HS256 JWT of `claims`, signed with the test secret. */
function mint(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

const now = () => Math.floor(Date.now() / 1000);

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "chat-auth-"));
  const secretFile = join(dir, "jwt-secret");
  writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o600 });
  // startGateway appends CHAT_GATEWAY_ARGS; this file runs in its own process.
  process.env.CHAT_GATEWAY_ARGS = `${process.env.CHAT_GATEWAY_ARGS ?? ""} --auth-jwt-secret-file ${secretFile}`;
  const g = await startGateway({ repoRoot, distDir: join(webDir, "dist"), logPath: join(artifacts, "auth-browser-test-gateway.log") });
  if (g.skip) {
    skipReason = g.skip;
    return;
  }
  gateway = g.child;
  baseUrl = g.url;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await stopGateway(gateway);
});

async function openPage(path) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`${baseUrl}${path}`);
  await page.locator("#entry").waitFor({ state: "visible", timeout: WAIT });
  return { page, context, pageErrors };
}

describe("signed identities in the browser", () => {
  test("joins with a token from the URL fragment, named by the token", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const token = mint({ sub: "alice-1", name: "Alice", iat: now(), exp: now() + 600 });
    const { page, context, pageErrors } = await openPage(`/#room=signed&token=${token}`);
    // The name field stays in the page, hidden: the token names the person.
    assert.equal(await page.locator("[data-testid=username]").count(), 1);
    assert.equal(await page.locator("[data-testid=username]").isVisible(), false);
    assert.equal(await page.locator("#room").inputValue(), "signed");
    await page.locator("#join").click();
    await page.locator("#chat").waitFor({ state: "visible", timeout: WAIT });
    await until("connected", async () => (await page.locator("#conn-state").textContent()) === "connected");
    await until("Alice listed as me", async () => (await page.locator("#members li.me").textContent())?.includes("Alice"));
    assert.equal(await page.locator("[data-testid=token-refused]").isVisible(), false);
    assert.deepEqual(pageErrors, []);
    await page.screenshot({ path: join(artifacts, "screenshots", "auth-signed-in.png") }).catch(() => {});
    await context.close();
  });

  test("a refused token asks for a new one, with a reload button", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const expired = mint({ sub: "bob", name: "Bob", iat: now() - 600, exp: now() - 300 });
    const { page, context } = await openPage(`/#token=${expired}`);
    await page.locator("#join").click();
    const banner = page.locator("[data-testid=token-refused]");
    await banner.waitFor({ state: "visible", timeout: WAIT });
    assert.match((await banner.textContent()) ?? "", /sign-in|acesso/i);
    assert.equal(await page.locator("[data-testid=token-reload]").isVisible(), true);
    await page.screenshot({ path: join(artifacts, "screenshots", "auth-token-refused.png") }).catch(() => {});
    // Reload loads the page again (the same URL: a site that renews the token hands over a new one).
    await Promise.all([page.waitForEvent("load", { timeout: WAIT }), page.locator("[data-testid=token-reload]").click()]);
    await page.locator("#entry").waitFor({ state: "visible", timeout: WAIT });
    await context.close();
  });
});
