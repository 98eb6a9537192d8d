// The signed token (JWT) this page chats with, when the chat runs with
// signed identities: handed over in the page URL's fragment (`#token=...`,
// beside `#room=...`; never sent to any server but in Hello) or, by an
// embedding site, as a `?token=` query parameter. Pure, so unit tests drive it.
//
// The gateway checks the token; the page only reads the name it carries to
// fill the (hidden) name field, and never trusts it for anything else.

/** The token in `hash` (location.hash) or else in `search` (location.search), or "". */
export function tokenFromUrl(hash: string, search: string): string {
  const frag = hash.startsWith("#") ? hash.slice(1) : hash;
  for (const part of frag.split("&")) {
    if (part.startsWith("token=")) return plausible(decode(part.slice("token=".length)));
  }
  try {
    return plausible(new URLSearchParams(search).get("token") ?? "");
  } catch {
    return "";
  }
}

/** The name a token carries (`name`, else `sub`), for display only; "" if unreadable. */
export function nameFromToken(token: string): string {
  const payload = token.split(".")[1];
  if (!payload) return "";
  try {
    const b64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
    const { name, sub } = (claims ?? {}) as { name?: unknown; sub?: unknown };
    if (typeof name === "string" && name.trim()) return name.trim();
    return typeof sub === "string" ? sub : "";
  } catch {
    return "";
  }
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return "";
  }
}

/** A JWT is three base64url parts: anything else is not handed on. */
function plausible(token: string): string {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token) ? token : "";
}
