// Mentions: "@name" in a message, where the name after the "@" is the
// reader's by the server's rules (names.ts: trimmed, NFC, case aside), the
// "@" starts a word, and the name is not the start of a longer word
// ("@ana" is not a mention of "an"). Pure: the view turns the segments into
// text nodes and <mark> elements, never HTML.

import { nameKey } from "./names";

export interface Segment {
  text: string;
  mention: boolean;
}

const WORD = /[\p{L}\p{N}\p{M}_]/u;

/** The text cut into plain and mention segments (mentions of `me` only). */
export function splitMentions(text: string, me: string): Segment[] {
  const key = nameKey(me);
  const out: Segment[] = [];
  if (!key || !text.includes("@")) return [{ text, mention: false }];
  // A mention's text is at most a few times the name's length (case and
  // normalisation can change lengths), so only so many candidates are tried.
  const longest = me.length * 3 + 4;
  let plainFrom = 0;
  let i = 0;
  while (i < text.length) {
    const at = text.indexOf("@", i);
    if (at < 0) break;
    const end = at >= 0 && startsWord(text, at) ? mentionEnd(text, at + 1, key, longest) : -1;
    if (end < 0) {
      i = at + 1;
      continue;
    }
    if (at > plainFrom) out.push({ text: text.slice(plainFrom, at), mention: false });
    out.push({ text: text.slice(at, end), mention: true });
    plainFrom = end;
    i = end;
  }
  if (plainFrom < text.length) out.push({ text: text.slice(plainFrom), mention: false });
  return out.length ? out : [{ text, mention: false }];
}

/** Whether `text` mentions `me`. */
export function mentions(text: string, me: string): boolean {
  return splitMentions(text, me).some((s) => s.mention);
}

function startsWord(text: string, at: number): boolean {
  if (at === 0) return true;
  const before = text.codePointAt(at - 1);
  // A low surrogate: look at the whole character.
  const prev = before !== undefined && before >= 0xdc00 && before <= 0xdfff ? text.slice(at - 2, at) : text[at - 1]!;
  return !WORD.test(prev) && prev !== "@";
}

/** The end (exclusive) of the shortest name after `from` whose key is `key`, and that ends a word; -1 if none. */
function mentionEnd(text: string, from: number, key: string, longest: number): number {
  const limit = Math.min(text.length, from + longest);
  for (let end = from + 1; end <= limit; end++) {
    if (isLowSurrogate(text.charCodeAt(end)) ) continue; // never cut a character in two
    if (nameKey(text.slice(from, end)) !== key) continue;
    if (/\s/u.test(text[from]!) || /\s/u.test(text[end - 1]!)) continue; // "@ ana" is no mention
    const next = text.slice(end, end + 2);
    // A combining mark after it would change the name; a letter or digit makes a longer word.
    if (next && WORD.test([...next][0]!)) continue;
    return end;
  }
  return -1;
}

function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}
