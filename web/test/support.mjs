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
