// Small DOM helpers shared by the views: making elements with text (never
// HTML), finding the page's elements by id when a view is built (never at
// module load), and putting the catalogue's words into the static page.

import type { Catalogue } from "./i18n";

export function el<K extends keyof HTMLElementTagNameMap>(
  doc: Document,
  tag: K,
  cls?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const e = doc.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** The element with this id, or an error naming it. */
export function byId<T extends HTMLElement = HTMLElement>(doc: Document, id: string): T {
  const e = doc.getElementById(id);
  if (!e) throw new Error(`#${id} missing`);
  return e as T;
}

type StringKey = { [K in keyof Catalogue]: Catalogue[K] extends string ? K : never }[keyof Catalogue];

function word(c: Catalogue, key: string | undefined): string | null {
  if (!key || !(key in c)) return null;
  const v = c[key as StringKey];
  return typeof v === "string" ? v : null;
}

/**
 * Sets the words of the static page from a catalogue: data-i18n (text),
 * data-i18n-placeholder, data-i18n-title and data-i18n-aria-label name
 * catalogue keys. Only the element's own text changes, as text.
 */
export function applyTexts(root: ParentNode, c: Catalogue): void {
  for (const e of root.querySelectorAll<HTMLElement>("[data-i18n]")) {
    const w = word(c, e.dataset.i18n);
    if (w !== null) e.textContent = w;
  }
  for (const e of root.querySelectorAll<HTMLElement>("[data-i18n-placeholder]")) {
    const w = word(c, e.dataset.i18nPlaceholder);
    if (w !== null) e.setAttribute("placeholder", w);
  }
  for (const e of root.querySelectorAll<HTMLElement>("[data-i18n-title]")) {
    const w = word(c, e.dataset.i18nTitle);
    if (w !== null) e.title = w;
  }
  for (const e of root.querySelectorAll<HTMLElement>("[data-i18n-aria-label]")) {
    const w = word(c, e.dataset.i18nAriaLabel);
    if (w !== null) e.setAttribute("aria-label", w);
  }
}

/** Every data-i18n* key used in a page (for the catalogue test). */
export function textKeys(html: string): string[] {
  return [...html.matchAll(/data-i18n(?:-placeholder|-title|-aria-label)?="([^"]+)"/g)].map((m) => m[1]!);
}
