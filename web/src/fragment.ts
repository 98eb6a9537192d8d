// The room given in the page URL's fragment. Pure, so unit tests drive it.
//
// Two forms:
// - `#room=<name>`: form-style (`+` is a space, `%2B` a plus), other
//   `key=value` pairs beside it, separated by `&`, are ignored (a fragment
//   with only `token=...`, see auth-token.ts, names no room);
// - `#<name>`: the whole fragment, percent-decoded.
//
// Anything that does not decode (`#%`, `#%E0%A4%A`, an encoded lone
// surrogate) or could never be a room name (empty, over 64 characters,
// surrounding whitespace, control or format characters) is ignored: the
// result is "" and the page carries on as if there were no fragment.

/** The server's room rule: 1..=64 characters. */
export const MAX_ROOM_CHARS = 64;

/** The room named by `hash` (location.hash, with or without its "#"), or "". */
export function roomFromFragment(hash: string): string {
  const frag = hash.startsWith("#") ? hash.slice(1) : hash;
  if (!frag) return "";
  let raw: string | null = frag;
  let form = false;
  if (/(^|&)(room|token)=/.test(frag)) {
    form = true;
    raw = null;
    for (const part of frag.split("&")) {
      if (part.startsWith("room=")) {
        raw = part.slice("room=".length);
        break;
      }
    }
  }
  if (raw === null) return "";
  const room = decode(form ? raw.replace(/\+/g, " ") : raw);
  return room !== null && plausibleRoom(room) ? room : "";
}

/** The fragment that names `room` (what roomFromFragment reads back). */
export function fragmentForRoom(room: string): string {
  return `#room=${encodeURIComponent(room)}`;
}

function decode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null; // URIError: a malformed escape
  }
}

function plausibleRoom(room: string): boolean {
  if (room === "" || room !== room.trim()) return false;
  if ([...room].length > MAX_ROOM_CHARS) return false;
  return !/[\p{Cc}\p{Cf}]/u.test(room);
}
