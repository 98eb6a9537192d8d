// The colour theme: light, dark, or "system" (follow prefers-color-scheme,
// the default). The choice is remembered in localStorage and applied as
// <html data-theme="light|dark"> (none for system), which style.css reads.

import type { StorageLike } from "./deps";

export type Theme = "light" | "dark" | "system";
export const THEMES: readonly Theme[] = ["light", "dark", "system"];
export const THEME_STORAGE_KEY = "chat.theme";

export function storedTheme(storage: StorageLike | null): Theme {
  let v: string | null = null;
  try {
    v = storage?.getItem(THEME_STORAGE_KEY) ?? null;
  } catch {
    /* blocked storage: the default */
  }
  return v === "light" || v === "dark" ? v : "system";
}

export function rememberTheme(storage: StorageLike | null, theme: Theme): void {
  try {
    if (theme === "system") storage?.removeItem(THEME_STORAGE_KEY);
    else storage?.setItem(THEME_STORAGE_KEY, theme);
  } catch {
    /* blocked or full: applies to this page only */
  }
}

/** Applies a theme to the document element. */
export function applyTheme(root: HTMLElement, theme: Theme): void {
  if (theme === "system") {
    delete root.dataset.theme;
    root.style.colorScheme = "";
  } else {
    root.dataset.theme = theme;
    root.style.colorScheme = theme;
  }
}
