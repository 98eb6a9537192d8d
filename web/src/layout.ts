// How the timeline is laid out, as pure rules: a divider where the day
// changes ("Hoje", "Ontem", then the date), and consecutive messages of one
// person within a few minutes grouped under one name. Days are the reader's
// local days.

import { type Catalogue, formatDay, type Lang } from "./i18n";
import { nameKey } from "./names";

/** Messages of one person closer than this are grouped under one name. */
export const GROUP_GAP_MS = 5 * 60_000;

/** The local day of an instant, as a comparable number (yyyymmdd). */
export function dayKey(ms: number): number {
  const d = new Date(ms);
  return d.getFullYear() * 10_000 + (d.getMonth() + 1) * 100 + d.getDate();
}

/** Whole local days from the day of `ms` to the day of `nowMs` (0: same day, 1: yesterday). */
export function daysAgo(ms: number, nowMs: number): number {
  const a = new Date(ms);
  const b = new Date(nowMs);
  const start = (d: Date) => Date.UTC(d.getFullYear(), d.getMonth(), d.getDate());
  return Math.round((start(b) - start(a)) / 86_400_000);
}

/** A divider's words: "Today"/"Hoje", "Yesterday"/"Ontem", the weekday within a week, else the date. */
export function dayLabel(ms: number, nowMs: number, lang: Lang, c: Catalogue): string {
  const ago = daysAgo(ms, nowMs);
  if (ago === 0) return c.today;
  if (ago === 1) return c.yesterday;
  return capitalise(formatDay(ms, lang, ago > 1 && ago < 7), lang);
}

/** Whether a divider goes before a message sent at `ms` that follows one sent at `prevMs` (null: the first). */
export function needsDivider(prevMs: number | null, ms: number): boolean {
  return prevMs === null || dayKey(prevMs) !== dayKey(ms);
}

export interface GroupItem {
  username: string;
  sentAtMs: number;
  system: boolean;
}

/** Whether `cur` continues `prev`'s group: same person, same day, no system message, within GROUP_GAP_MS. */
export function continuesGroup(prev: GroupItem | null, cur: GroupItem): boolean {
  if (!prev || prev.system || cur.system) return false;
  if (nameKey(prev.username) !== nameKey(cur.username)) return false;
  if (needsDivider(prev.sentAtMs, cur.sentAtMs)) return false;
  const gap = cur.sentAtMs - prev.sentAtMs;
  return gap >= 0 && gap < GROUP_GAP_MS;
}

function capitalise(s: string, lang: Lang): string {
  return s ? s[0]!.toLocaleUpperCase(lang) + s.slice(1) : s;
}
