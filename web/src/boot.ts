// Starts the page: the language and theme (and their switches), the entry
// and chat screens, and the hand-over between them. After a reload the tab
// goes back into its room under the same name: the session's resume token
// (in this tab's sessionStorage) takes the name over from the connection the
// reload left behind. Nothing here runs at module load: boot() does it all.

import { nameFromToken, tokenFromUrl } from "./auth-token";
import { ChatView } from "./chat-view";
import { localStore, type StorageLike, tabStorage } from "./deps";
import { applyTexts, byId } from "./dom";
import { EntryView } from "./entry-view";
import { roomFromFragment } from "./fragment";
import { isLang, Locale } from "./i18n";
import { ChatSession } from "./session";
import { applyTheme, rememberTheme, storedTheme, type Theme, THEMES } from "./theme";

const STORAGE_NAME = "chat.username";
const STORAGE_ROOM = "chat.room";
/** sessionStorage: the name and room this tab is chatting in, so that a reload goes back in. */
const TAB_ROOM = "chat.tab";

/** Remembers (or, with null, forgets) which room this tab is in, for a reload. */
function rememberTabRoom(tab: StorageLike | null, where: { username: string; room: string } | null): void {
  try {
    if (where) tab?.setItem(TAB_ROOM, JSON.stringify(where));
    else tab?.removeItem(TAB_ROOM);
  } catch {
    /* storage blocked or full: a reload shows the entry screen */
  }
}

function tabRoom(tab: StorageLike | null): { username: string; room: string } | null {
  try {
    const v: unknown = JSON.parse(tab?.getItem(TAB_ROOM) ?? "null");
    const { username, room } = (v ?? {}) as { username?: unknown; room?: unknown };
    return typeof username === "string" && typeof room === "string" ? { username, room } : null;
  } catch {
    return null;
  }
}

function wsUrl(loc: Location): string {
  const u = new URL("/ws", loc.href);
  u.protocol = loc.protocol === "https:" ? "wss:" : "ws:";
  return u.toString();
}

/** Builds both screens on `doc` and shows the right one. */
export function boot(doc: Document, win: Window): { entry: EntryView; chat: ChatView; locale: Locale } {
  const local = localStore();
  const tab = tabStorage();
  const nav = win.navigator;
  const locale = new Locale(local, nav.languages?.length ? nav.languages : [nav.language]);

  // ------------------------------------------------------------ language and theme
  const langSelect = byId<HTMLSelectElement>(doc, "language");
  const themeSelect = byId<HTMLSelectElement>(doc, "theme");
  const showLang = () => {
    doc.documentElement.lang = locale.lang;
    langSelect.value = locale.lang;
    applyTexts(doc, locale.t);
  };
  showLang();
  locale.onChange(showLang);
  langSelect.addEventListener("change", () => {
    if (isLang(langSelect.value)) locale.set(langSelect.value);
  });
  const theme = storedTheme(local);
  applyTheme(doc.documentElement, theme);
  themeSelect.value = theme;
  themeSelect.addEventListener("change", () => {
    const v = themeSelect.value as Theme;
    if (!THEMES.includes(v)) return;
    rememberTheme(local, v);
    applyTheme(doc.documentElement, v);
  });

  // ------------------------------------------------------------ signed identity
  // With a token in the URL the server names us: the name field is hidden
  // (kept in the page, filled with the token's name) and the token goes in Hello.
  const authToken = tokenFromUrl(win.location.hash, win.location.search);
  const tokenName = authToken ? nameFromToken(authToken) || "…" : "";
  if (authToken) {
    byId<HTMLInputElement>(doc, "username").hidden = true;
    byId<HTMLElement>(doc, "username-label").hidden = true;
  }
  const tokenRefused = byId<HTMLElement>(doc, "token-refused");
  byId<HTMLButtonElement>(doc, "token-reload").addEventListener("click", () => win.location.reload());

  // ------------------------------------------------------------ screens
  const remember = (key: string, value: string) => {
    try {
      local?.setItem(key, value);
    } catch {
      /* blocked or full */
    }
  };
  // Built below; the callbacks only run once both exist.
  let chat: ChatView;
  const entry = new EntryView({
    doc,
    locale,
    fetchRooms: async () => {
      const res = await win.fetch("/api/rooms", { cache: "no-store" });
      return res.ok ? res.json() : null;
    },
    onJoin: (username, room) => chat.start(username, room),
  });
  chat = new ChatView({
    doc,
    win,
    locale,
    makeSession: (username, room, listener) =>
      new ChatSession({
        url: wsUrl(win.location),
        username,
        room,
        authToken,
        storage: tab,
        listener,
        texts: () => locale.t,
      }),
    onEntered: (username, room) => {
      remember(STORAGE_NAME, username);
      remember(STORAGE_ROOM, room);
      rememberTabRoom(tab, { username, room });
      entry.hide();
    },
    onEntryError: (text) => {
      rememberTabRoom(tab, null);
      chat.hide();
      entry.show(text);
    },
    onLeft: () => {
      rememberTabRoom(tab, null);
      entry.show();
    },
    onGone: () => rememberTabRoom(tab, null),
    onTokenRefused: () => {
      tokenRefused.hidden = false;
      byId<HTMLButtonElement>(doc, "token-reload").focus();
    },
  });
  doc.addEventListener("visibilitychange", () => chat.setHidden(doc.visibilityState === "hidden"));
  chat.setHidden(doc.visibilityState === "hidden");

  // ------------------------------------------------------------ first screen
  const back = tabRoom(tab);
  let storedName = "";
  let storedRoom = "";
  try {
    storedName = local?.getItem(STORAGE_NAME) ?? "";
    storedRoom = local?.getItem(STORAGE_ROOM) ?? "";
  } catch {
    /* blocked storage */
  }
  // The fragment may name a room (#room=NAME or #NAME); a malformed one is ignored.
  const fromHash = roomFromFragment(win.location.hash);
  entry.fill(tokenName || (back?.username ?? storedName), back?.room ?? (fromHash || storedRoom || "lobby"));
  entry.show();
  if (back) entry.submitNow();
  return { entry, chat, locale };
}
