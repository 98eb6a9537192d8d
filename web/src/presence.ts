// Presence without noise: consecutive join/leave events collapse into one
// timeline line, and the member list stays sorted. Pure: no DOM, no timers
// of its own (Throttle takes them injected), so unit tests drive it. Names
// are keyed as the server keys them (names.ts).

import type { PresenceWords } from "./i18n";
import { nameKey } from "./names";

export type PresenceKind = "joined" | "left";

/**
 * What a run of events did to one person, from the first and the last of
 * their events in the run (whatever happened in between):
 * - `joined`: was not here before the run, is here now;
 * - `left`: was here, is gone;
 * - `joined-left`: was not here and is not here now (came and went);
 * - `left-joined`: was here and is here now (went and came back).
 */
export type PresenceEffect = "joined" | "left" | "joined-left" | "left-joined";

/** The order groups are listed in, in the line and in `PresenceRun.groups()`. */
export const EFFECT_ORDER: readonly PresenceEffect[] = ["joined", "left", "joined-left", "left-joined"];

export interface PresenceGroup {
  effect: PresenceEffect;
  /** Display names (the latest spelling seen), in order of first appearance in the run. */
  names: string[];
}


interface Person {
  name: string;
  first: PresenceKind;
  last: PresenceKind;
}

/**
 * One run of consecutive presence events: per person only the first and the
 * last event are kept, so a person is in exactly one group however many
 * times they joined and left, and memory grows with the number of people,
 * never with the number of events.
 */
export class PresenceRun {
  private readonly people = new Map<string, Person>();
  private count = 0;

  add(name: string, kind: PresenceKind): void {
    this.count++;
    const key = nameKey(name);
    const p = this.people.get(key);
    if (p) {
      p.name = name;
      p.last = kind;
    } else {
      this.people.set(key, { name, first: kind, last: kind });
    }
  }

  /** Events added so far. */
  get events(): number {
    return this.count;
  }

  /** Distinct people in the run. */
  get size(): number {
    return this.people.size;
  }

  /** The net effect of the run on one person, or null if the run does not mention them. */
  effectOf(name: string): PresenceEffect | null {
    const p = this.people.get(nameKey(name));
    return p ? effect(p) : null;
  }

  /** The non-empty groups, in EFFECT_ORDER. */
  groups(): PresenceGroup[] {
    const by = new Map<PresenceEffect, string[]>();
    for (const p of this.people.values()) {
      const e = effect(p);
      let names = by.get(e);
      if (!names) by.set(e, (names = []));
      names.push(p.name);
    }
    return EFFECT_ORDER.filter((e) => by.has(e)).map((e) => ({ effect: e, names: by.get(e)! }));
  }

  /** The line shown for the run, e.g. "Ana, Bruno and 3 others joined; Carla left". */
  text(maxNames = 3, words: PresenceWords = ENGLISH): string {
    return describePresence(this.groups(), maxNames, words);
  }
}

function effect(p: Person): PresenceEffect {
  if (p.first === "joined") return p.last === "joined" ? "joined" : "joined-left";
  return p.last === "left" ? "left" : "left-joined";
}

/** The English words (the catalogues in lang-*.ts carry each language's). */
const ENGLISH: PresenceWords = {
  verb: (effect) => ({ joined: "joined", left: "left", "joined-left": "joined and left", "left-joined": "left and came back" })[effect],
  and: "and",
  others: (n) => `${n} others`,
};

/**
 * "Ana", "Ana and Bruno", "Ana, Bruno and Carla"; more than `max` names:
 * the first `max - 1` and "and N others" (N is always at least 2).
 */
export function listNames(names: readonly string[], max = 3, words: PresenceWords = ENGLISH): string {
  const n = names.length;
  if (n === 0) return "";
  if (n === 1) return names[0]!;
  const limit = Math.max(2, max);
  if (n <= limit) return `${names.slice(0, -1).join(", ")} ${words.and} ${names[n - 1]}`;
  const shown = names.slice(0, limit - 1);
  return `${shown.join(", ")} ${words.and} ${words.others(n - shown.length)}`;
}

/** "Ana, Bruno and 3 others joined; Carla left; Dan joined and left". */
export function describePresence(groups: readonly PresenceGroup[], maxNames = 3, words: PresenceWords = ENGLISH): string {
  return groups
    .filter((g) => g.names.length > 0)
    .map((g) => `${listNames(g.names, maxNames, words)} ${words.verb(g.effect, g.names.length)}`)
    .join("; ");
}

// ------------------------------------------------------------------ member list

const collator = new Intl.Collator(undefined, { sensitivity: "base", numeric: true });

/**
 * Member list order: as people read names (case and accents aside, numbers
 * by value: "Álvaro" < "bob" < "user2" < "user10"), then by code points, so
 * that two different names never compare equal and the order is total.
 */
export function compareNames(a: string, b: string): number {
  return collator.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0);
}

/** Where `name` is, or would go, in a list sorted by compareNames. */
function position(list: readonly string[], name: string): { index: number; found: boolean } {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const c = compareNames(list[mid]!, name);
    if (c === 0) return { index: mid, found: true };
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return { index: lo, found: false };
}

/** A copy of a list sorted by compareNames, with `name` in its place (once). O(log n) compares. */
export function withMember(list: readonly string[], name: string): string[] {
  const { index, found } = position(list, name);
  const copy = list.slice();
  if (!found) copy.splice(index, 0, name);
  return copy;
}

/** A copy of a list sorted by compareNames, without `name`. O(log n) compares. */
export function withoutMember(list: readonly string[], name: string): string[] {
  const { index, found } = position(list, name);
  const copy = list.slice();
  if (found) copy.splice(index, 1);
  return copy;
}

// ------------------------------------------------------------------ throttle

export interface ThrottleClock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

/**
 * Runs `fn` at most once per `ms`: a request when idle runs it at once, the
 * requests that follow within `ms` run it once more at the end of the
 * period. So a single event shows at once and a flood costs at most
 * 1000 / ms runs a second.
 */
export class Throttle {
  private last = -Infinity;
  private timer: unknown = null;

  constructor(
    private readonly fn: () => void,
    private readonly ms: number,
    private readonly clock: ThrottleClock = {
      setTimeout: (f, t) => globalThis.setTimeout(f, t),
      clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof setTimeout>),
      now: () => Date.now(),
    },
  ) {}

  request(): void {
    if (this.timer !== null) return;
    const wait = this.last + this.ms - this.clock.now();
    if (wait <= 0) this.run();
    else this.timer = this.clock.setTimeout(() => this.run(), wait);
  }

  /** Runs now if a run is due (pending), e.g. before something that needs the result. */
  flush(): void {
    if (this.timer !== null) this.run();
  }

  /** Drops a pending run. */
  cancel(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  get pending(): boolean {
    return this.timer !== null;
  }

  private run(): void {
    this.cancel();
    this.last = this.clock.now();
    this.fn();
  }
}
