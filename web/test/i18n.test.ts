// Unit tests of the message catalogue and language choice (src/i18n.ts):
// a key missing (or empty) in either language fails here, and so does a
// key the page asks for (data-i18n* in static/index.html) that is not there.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { textKeys } from "../src/dom";
import { type Catalogue, catalogues, formatTime, LANGS, pickLang } from "../src/i18n";
import { EFFECT_ORDER, PresenceRun } from "../src/presence";

/** Every key path of a catalogue ("errors.kicked", "connState.offline", ...), with its value. */
function leaves(obj: object, prefix = ""): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(obj)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object") for (const [p, x] of leaves(v, path)) out.set(p, x);
    else out.set(path, v);
  }
  return out;
}

describe("catalogue", () => {
  test("both languages have exactly the same keys, each a non-empty string or a function of the same arity", () => {
    const en = leaves(catalogues.en);
    const pt = leaves(catalogues["pt-BR"]);
    assert.ok(en.size > 60, `${en.size} keys`);
    assert.deepEqual([...pt.keys()].filter((k) => !en.has(k)), [], "keys only in pt-BR");
    assert.deepEqual([...en.keys()].filter((k) => !pt.has(k)), [], "keys missing in pt-BR");
    for (const [k, v] of en) {
      const w = pt.get(k);
      assert.equal(typeof w, typeof v, k);
      if (typeof v === "string") {
        assert.ok(v.trim() && (w as string).trim(), `${k} is empty`);
      } else {
        assert.equal((w as (...a: unknown[]) => string).length, (v as (...a: unknown[]) => string).length, `${k} arity`);
        const calls =
          k === "presence.verb"
            ? EFFECT_ORDER.flatMap((e) => [[e, 1], [e, 2]])
            : [Array.from({ length: (v as () => string).length }, (_, i) => (i === 0 ? 3 : "x"))];
        for (const args of calls) {
          assert.ok((v as (...a: unknown[]) => string)(...args)?.trim(), `${k}(${args}) is empty`);
          assert.ok((w as (...a: unknown[]) => string)(...args)?.trim(), `${k}(${args}) is empty in pt-BR`);
        }
      }
    }
  });

  test("every data-i18n key of the page is a string in every catalogue", () => {
    const html = readFileSync(new URL("../static/index.html", import.meta.url), "utf8");
    const keys = textKeys(html);
    assert.ok(keys.length > 15, `${keys.length} keys in the page`);
    for (const lang of LANGS) {
      for (const k of keys) assert.equal(typeof catalogues[lang][k as keyof Catalogue], "string", `${lang}: ${k}`);
    }
  });

  test("Portuguese says what a Portuguese reader expects", () => {
    const pt = catalogues["pt-BR"];
    assert.equal(pt.join, "Entrar");
    assert.equal(pt.today, "Hoje");
    assert.equal(pt.yesterday, "Ontem");
    assert.equal(pt.people(1), "1 pessoa");
    assert.equal(pt.people(3), "3 pessoas");
    assert.equal(catalogues.en.people(3), "3 people");
    const run = new PresenceRun();
    for (const n of ["Ana", "Bruno", "Carla", "Davi", "Eva"]) run.add(n, "joined");
    run.add("Fábio", "left");
    assert.equal(run.text(3, pt.presence), "Ana, Bruno e mais 3 entraram; Fábio saiu");
    assert.equal(run.text(3, catalogues.en.presence), "Ana, Bruno and 3 others joined; Fábio left");
  });
});

describe("language choice", () => {
  test("remembered first, then the browser's languages, then English", () => {
    assert.equal(pickLang("en", ["pt-BR"]), "en");
    assert.equal(pickLang("pt-BR", ["en-US"]), "pt-BR");
    assert.equal(pickLang(null, ["pt-BR", "en"]), "pt-BR");
    assert.equal(pickLang(null, ["pt-PT"]), "pt-BR");
    assert.equal(pickLang(null, ["de-DE", "en-GB", "pt-BR"]), "en");
    assert.equal(pickLang(null, ["fr", "pt"]), "pt-BR");
    assert.equal(pickLang(null, ["fr"]), "en");
    assert.equal(pickLang("xx", []), "en");
  });

  test("times in the language's way", () => {
    const ms = Date.UTC(2026, 11, 4, 15, 5);
    const offset = new Date(ms).getTimezoneOffset();
    assert.match(formatTime(ms, "pt-BR"), /^\d\d:\d\d$/);
    if (offset === 0) assert.equal(formatTime(ms, "pt-BR"), "15:05");
    assert.match(formatTime(ms, "en"), /\d\d:\d\d\s?[AP]M/);
  });
});
