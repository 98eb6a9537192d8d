// Unit tests of src/names.ts: the web client keys names exactly as the
// server does, checked with the vectors chat-proto's Rust test reads too
// (crates/chat-proto/tests/name_keys.json).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { displayName, nameKey, sameName } from "../src/names";

const file = new URL("../../crates/chat-proto/tests/name_keys.json", import.meta.url);
const { vectors } = JSON.parse(readFileSync(file, "utf8")) as { vectors: { raw: string; display: string; key: string }[] };

describe("name keys", () => {
  test("the shared vectors: display form and key as chat-proto computes them", () => {
    assert.ok(vectors.length >= 10);
    for (const v of vectors) {
      assert.equal(displayName(v.raw), v.display, `display of ${JSON.stringify(v.raw)}`);
      assert.equal(nameKey(v.raw), v.key, `key of ${JSON.stringify(v.raw)}`);
    }
  });

  test("trims Unicode White_Space as Rust does, not as String.prototype.trim", () => {
    assert.equal(nameKey("Ana\u0085"), "ana"); // NEL: White_Space, which trim() keeps
    assert.equal(nameKey("\ufeffana"), "\ufeffana"); // BOM: not White_Space, which trim() removes
    assert.notEqual("Ana\u0085".trim(), "Ana", "the difference the rule is about");
  });

  test("sameName: one person whatever the case, composition or surrounding space", () => {
    assert.ok(sameName("José", " JOSE\u0301 "));
    assert.ok(sameName("\u212bngström", "ångström"));
    assert.ok(!sameName("ana", "ana2"));
  });
});
