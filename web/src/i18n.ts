// Languages: the typed message catalogue every visible string comes from
// (one object per language, in lang-*.ts; the compiler refuses a catalogue
// with a key missing, a unit test checks it at run time too), the choice of
// language (remembered, else the browser's languages, else English), and
// dates and times with Intl in the chosen language.

import { en } from "./lang-en";
import { ptBR } from "./lang-pt-br";
import type { PresenceEffect } from "./presence";

export type Lang = "pt-BR" | "en";
export const LANGS: readonly Lang[] = ["pt-BR", "en"];
/** localStorage key of the chosen language. */
export const LANG_STORAGE_KEY = "chat.lang";

/** The words of the presence lines ("Ana, Bruno and 3 others joined"). */
export interface PresenceWords {
  /** What `n` people did: "joined"; "entrou" (1), "entraram" (more). */
  verb(effect: PresenceEffect, n: number): string;
  /** The word before the last name: "and", "e". */
  and: string;
  /** "3 others", "mais 3". */
  others(n: number): string;
}

export interface Catalogue {
  /** The language's own name, for the switch. */
  langName: string;
  appName: string;
  // entry screen
  subtitle: string;
  nameLabel: string;
  namePlaceholder: string;
  roomLabel: string;
  roomPlaceholder: string;
  activeRooms: string;
  noRooms: string;
  join: string;
  joining: string;
  needName: string;
  /** The signed token was refused or expired (with a reload button). */
  tokenRefused: string;
  reload: string;
  needRoom: string;
  roomSpaces: string;
  people(n: number): string;
  // preferences
  language: string;
  theme: string;
  themeLight: string;
  themeDark: string;
  themeSystem: string;
  settings: string;
  // chat screen
  leave: string;
  leaveTitle: string;
  connState: Record<"connected" | "connecting" | "reconnecting" | "offline", string>;
  gateway(id: string): string;
  membersHeading: string;
  members(n: number): string;
  showMembers(n: number): string;
  you: string;
  typingOne(name: string): string;
  typingTwo(a: string, b: string): string;
  typingMany(n: number): string;
  system: string;
  sending: string;
  notSent: string;
  messagesLabel: string;
  messageLabel: string;
  messagePlaceholder: string;
  send: string;
  today: string;
  yesterday: string;
  roomStart: string;
  loadingOlder: string;
  unreadLine: string;
  copyInvite: string;
  inviteCopied: string;
  inviteCopyFailed(url: string): string;
  enableNotifications: string;
  notificationsOn: string;
  mentionedYou(author: string, room: string): string;
  newMessage(author: string): string;
  presence: PresenceWords;
  // errors and notices
  errors: {
    usernameTaken: string;
    invalidUsername: string;
    invalidRoom: string;
    tooManyRooms: string;
    unavailable: string;
    internal: string;
    invalidToken: string;
    kicked: string;
    replaced: string;
    rateLimited: string;
    messageTooLarge: string;
    emptyMessage: string;
    notInRoom: string;
    notAuthenticated: string;
    other(serverMessage: string): string;
    unexpected: string;
    kickedBecause(reason: string): string;
    tokenInvalidBecause(reason: string): string;
  };
  unreachable: string;
  tooLong(maxBytes: number): string;
  historyGap: string;
}

export const catalogues: Record<Lang, Catalogue> = { "pt-BR": ptBR, en };

/**
 * The language to use: the remembered choice, else the first of the
 * browser's languages that is Portuguese or English (any Portuguese gets
 * pt-BR), else English.
 */
export function pickLang(stored: string | null, browser: readonly string[]): Lang {
  if (stored === "pt-BR" || stored === "en") return stored;
  for (const tag of browser) {
    const base = tag.toLowerCase().split("-")[0];
    if (base === "pt") return "pt-BR";
    if (base === "en") return "en";
  }
  return "en";
}

/** "14:05" in the language's way. */
export function formatTime(ms: number, lang: Lang): string {
  return new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" }).format(ms);
}

/** The full date and time, for a message's tooltip and its focus. */
export function formatFull(ms: number, lang: Lang): string {
  return new Intl.DateTimeFormat(lang, { dateStyle: "full", timeStyle: "medium" }).format(ms);
}

/** A day divider's date: "3 de dezembro de 2026" / "December 3, 2026", the weekday when within a week. */
export function formatDay(ms: number, lang: Lang, withinWeek: boolean): string {
  const opts: Intl.DateTimeFormatOptions = withinWeek
    ? { weekday: "long", day: "numeric", month: "long" }
    : { day: "numeric", month: "long", year: "numeric" };
  return new Intl.DateTimeFormat(lang, opts).format(ms);
}

/** The chosen language, remembered in storage, with listeners for a switch. */
export class Locale {
  private current: Lang;
  private readonly listeners: ((lang: Lang) => void)[] = [];

  constructor(
    private readonly storage: { getItem(k: string): string | null; setItem(k: string, v: string): void } | null,
    browserLanguages: readonly string[],
  ) {
    let stored: string | null = null;
    try {
      stored = storage?.getItem(LANG_STORAGE_KEY) ?? null;
    } catch {
      /* blocked storage: the browser's languages decide */
    }
    this.current = pickLang(stored, browserLanguages);
  }

  get lang(): Lang {
    return this.current;
  }

  /** The catalogue of the chosen language. */
  get t(): Catalogue {
    return catalogues[this.current];
  }

  /** Switches (and remembers) the language; listeners redraw. */
  set(lang: Lang): void {
    if (lang === this.current) return;
    this.current = lang;
    try {
      this.storage?.setItem(LANG_STORAGE_KEY, lang);
    } catch {
      /* blocked or full: this page only */
    }
    for (const fn of this.listeners) fn(lang);
  }

  onChange(fn: (lang: Lang) => void): void {
    this.listeners.push(fn);
  }
}

/** Whether a string is one of LANGS. */
export function isLang(v: string): v is Lang {
  return (LANGS as readonly string[]).includes(v);
}
