// WCAG AA contrast of both themes, computed from the colours in
// static/style.css (`--name: light-dark(light, dark)` in :root): every text
// colour on every background it is drawn on reaches 4.5:1, the focus ring
// 3:1. The browser test runs axe-core on the real pages as well.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

type Theme = "light" | "dark";

function palette(css: string): Record<Theme, Map<string, string>> {
  const root = css.slice(css.indexOf(":root {"), css.indexOf("}", css.indexOf(":root {")));
  const out = { light: new Map<string, string>(), dark: new Map<string, string>() };
  for (const m of root.matchAll(/--([\w-]+):\s*(?:light-dark\((#[0-9a-f]{6}),\s*(#[0-9a-f]{6})\)|(#[0-9a-f]{6}));/gi)) {
    out.light.set(m[1]!, (m[2] ?? m[4])!);
    out.dark.set(m[1]!, (m[3] ?? m[4])!);
  }
  return out;
}

function luminance(hex: string): number {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  const [r, g, b] = c.map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)) as [number, number, number];
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

export function contrast(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x) as [number, number];
  return (hi + 0.05) / (lo + 0.05);
}

/** Text colour -> the backgrounds it is drawn on. */
const TEXT_ON: Record<string, string[]> = {
  text: ["bg", "surface", "surface-2", "other-bg"],
  muted: ["bg", "surface", "surface-2"],
  "accent-fg": ["other-bg", "surface", "bg"],
  "accent-text": ["accent", "accent-2"],
  "own-text": ["own-bg"],
  "own-meta": ["own-bg"],
  "system-text": ["system-bg"],
  danger: ["surface", "bg"],
  "mention-text": ["mention-bg"],
  bg: ["text"], // the full-time tooltip
};

describe("contrast (WCAG AA)", () => {
  const css = readFileSync(new URL("../static/style.css", import.meta.url), "utf8");
  const themes = palette(css);
  for (const theme of ["light", "dark"] as const) {
    test(`${theme} theme: every text colour on its backgrounds >= 4.5:1, focus ring >= 3:1`, (t) => {
      const p = themes[theme];
      const low: string[] = [];
      const figures: string[] = [];
      for (const [fg, bgs] of Object.entries(TEXT_ON)) {
        for (const bg of bgs) {
          assert.ok(p.has(fg) && p.has(bg), `--${fg} / --${bg} defined`);
          const r = contrast(p.get(fg)!, p.get(bg)!);
          figures.push(`${fg}/${bg} ${r.toFixed(2)}`);
          if (r < 4.5) low.push(`--${fg} on --${bg}: ${r.toFixed(2)}`);
        }
      }
      for (const bg of ["bg", "surface"]) {
        const r = contrast(p.get("focus")!, p.get(bg)!);
        if (r < 3) low.push(`--focus on --${bg}: ${r.toFixed(2)}`);
      }
      t.diagnostic(figures.join(", "));
      assert.deepEqual(low, []);
    });
  }
});
