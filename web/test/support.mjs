// Helpers shared by the browser tests: a free loopback port and condition waits.
import { createServer } from "node:net";

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/** Polls `cond` until it returns truthy (condition wait, not a fixed sleep). */
export async function until(what, cond, timeoutMs, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastErr ? `: ${lastErr.message}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Starts the gateway from CHAT_GATEWAY_BIN (default: the workspace's
 * target/debug/chat-gateway) on a free port, serving `distDir`, and waits for
 * GET /healthz to answer 200. Returns {url, child}, or {skip: reason} when
 * there is no binary. The log goes to `logPath`.
 */
export async function startGateway({ repoRoot, distDir, logPath }) {
  const { spawn, spawnSync } = await import("node:child_process");
  const { existsSync, mkdirSync, openSync } = await import("node:fs");
  const { dirname, join } = await import("node:path");
  const bin = process.env.CHAT_GATEWAY_BIN || join(repoRoot, "target/debug/chat-gateway");
  if (!existsSync(bin)) return { skip: `no CHAT_URL and no gateway binary at ${bin} (set CHAT_URL or CHAT_GATEWAY_BIN)` };
  if (!existsSync(join(distDir, "index.html"))) throw new Error(`${distDir} is not built: run npm run build`);
  const port = await freePort();
  const args = ["--listen", `127.0.0.1:${port}`, "--web-root", distDir];
  // Only pass --admin-listen to a gateway that knows it.
  const help = spawnSync(bin, ["--help"], { encoding: "utf8" });
  if (`${help.stdout}${help.stderr}`.includes("--admin-listen")) args.push("--admin-listen", "127.0.0.1:0");
  if (process.env.CHAT_GATEWAY_ARGS) args.push(...process.env.CHAT_GATEWAY_ARGS.split(/\s+/).filter(Boolean));
  mkdirSync(dirname(logPath), { recursive: true });
  const log = openSync(logPath, "w");
  const child = spawn(bin, args, { stdio: ["ignore", log, log], env: { ...process.env } });
  let exited = null;
  child.on("exit", (code, signal) => (exited = { code, signal }));
  const url = `http://127.0.0.1:${port}`;
  try {
    await until(`${url}/healthz (gateway log: ${logPath})`, async () => {
      if (exited) throw new Error(`gateway exited early (${JSON.stringify(exited)}), see ${logPath}`);
      const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      return r.status === 200;
    }, 30_000);
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  }
  return { url, child };
}

/** Stops a gateway started by startGateway: SIGTERM, then SIGKILL after 15 s. */
export async function stopGateway(child) {
  if (!child || child.exitCode !== null) return;
  child.kill("SIGTERM");
  await until("the gateway to exit", () => child.exitCode !== null || child.signalCode !== null, 15_000).catch(() => child.kill("SIGKILL"));
}

/** The Chromium flags every browser test uses (Debian's chromium, no downloads). */
export const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
