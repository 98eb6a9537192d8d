// Unit tests of the timeline's pure rules: day dividers (src/layout.ts),
// grouping, the unread counter (src/unread.ts) and mentions (src/mentions.ts,
// with the server's name rules).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { catalogues } from "../src/i18n";
import { continuesGroup, dayLabel, daysAgo, GROUP_GAP_MS, needsDivider } from "../src/layout";
import { mentions, splitMentions } from "../src/mentions";
import { Unread } from "../src/unread";

const at = (y: number, mo: number, d: number, h = 12, mi = 0) => new Date(y, mo - 1, d, h, mi).getTime();

describe("day dividers", () => {
  const now = at(2026, 12, 4, 20, 30);
  test("Hoje, Ontem, the weekday within a week, then the date", () => {
    const pt = catalogues["pt-BR"];
    assert.equal(dayLabel(at(2026, 12, 4, 0, 1), now, "pt-BR", pt), "Hoje");
    assert.equal(dayLabel(at(2026, 12, 3, 23, 59), now, "pt-BR", pt), "Ontem");
    assert.equal(dayLabel(at(2026, 12, 3), now, "en", catalogues.en), "Yesterday");
    assert.match(dayLabel(at(2026, 12, 1), now, "pt-BR", pt), /^Terça-feira/);
    assert.equal(dayLabel(at(2026, 11, 2), now, "pt-BR", pt), "2 de novembro de 2026");
    assert.equal(dayLabel(at(2026, 11, 2), now, "en", catalogues.en), "November 2, 2026");
  });

  test("a divider before the first message and wherever the local day changes", () => {
    assert.ok(needsDivider(null, at(2026, 12, 4)));
    assert.ok(!needsDivider(at(2026, 12, 4, 0, 0), at(2026, 12, 4, 23, 59)));
    assert.ok(needsDivider(at(2026, 12, 3, 23, 59), at(2026, 12, 4, 0, 0)));
    assert.equal(daysAgo(at(2026, 1, 1), at(2026, 12, 31)), 364);
    // Across a daylight-saving change the count is still in whole days.
    assert.equal(daysAgo(at(2026, 3, 1), at(2026, 4, 1)), 31);
  });
});

describe("grouping", () => {
  const m = (username: string, sentAtMs: number, system = false) => ({ username, sentAtMs, system });
  const t0 = at(2026, 12, 4, 10);
  test("one person within a few minutes: one group; another person, a gap or a system message: a new one", () => {
    assert.ok(continuesGroup(m("Ana", t0), m("Ana", t0 + 60_000)));
    assert.ok(continuesGroup(m("Ana", t0), m(" ANA", t0 + GROUP_GAP_MS - 1)), "names as the server compares them");
    assert.ok(!continuesGroup(m("Ana", t0), m("Ana", t0 + GROUP_GAP_MS)));
    assert.ok(!continuesGroup(m("Ana", t0), m("Bruno", t0 + 1000)));
    assert.ok(!continuesGroup(m("Ana", t0, true), m("Ana", t0 + 1000)));
    assert.ok(!continuesGroup(null, m("Ana", t0)));
    assert.ok(!continuesGroup(m("Ana", at(2026, 12, 3, 23, 59)), m("Ana", at(2026, 12, 4, 0, 1))), "not across a day");
  });
});

describe("unread", () => {
  test("counts others' messages while hidden; the line goes before the first; visible again clears the count", () => {
    const u = new Unread();
    assert.equal(u.onMessage("1-0", false), false, "visible: nothing unread");
    assert.equal(u.title("sistemas-distribuidos"), "sistemas-distribuidos");
    u.setHidden(true);
    assert.equal(u.onMessage("2-0", true), false, "one's own message is not unread");
    assert.equal(u.onMessage("3-0", false), true, "the first missed message gets the line");
    assert.equal(u.onMessage("4-0", false), false);
    assert.equal(u.onMessage("5-0", false), false);
    assert.equal(u.count, 3);
    assert.equal(u.title("sistemas-distribuidos"), "(3) sistemas-distribuidos");
    u.setHidden(false);
    assert.equal(u.count, 0);
    assert.equal(u.firstUnread, "3-0", "the line stays where the reader left off");
    assert.equal(u.title("sistemas-distribuidos"), "sistemas-distribuidos");
    u.setHidden(true);
    assert.equal(u.onMessage("6-0", false), true, "a new absence moves the line");
    assert.equal(u.firstUnread, "6-0");
  });
});

describe("mentions", () => {
  const marked = (text: string, me: string) => splitMentions(text, me).filter((s) => s.mention).map((s) => s.text);
  test("@name by the server's name rules: case, composition, as a whole word", () => {
    assert.deepEqual(marked("oi @ana, tudo bem?", "Ana"), ["@ana"]);
    assert.deepEqual(marked("@ANA!", "ana"), ["@ANA"]);
    assert.deepEqual(marked("valeu @Jose\u0301", "José"), ["@Jose\u0301"]);
    assert.deepEqual(marked("@\u212bngström", "ångström"), ["@\u212bngström"]);
    assert.deepEqual(marked("@João Pedro, olha", "João Pedro"), ["@João Pedro"]);
    assert.deepEqual(marked("@ana e @ana", "ana"), ["@ana", "@ana"]);
  });

  test("not a mention: a longer name, an e-mail address, another name, no name", () => {
    assert.deepEqual(marked("@anabela", "ana"), []);
    assert.deepEqual(marked("ana@ana.com", "ana"), []);
    assert.deepEqual(marked("@bruno", "ana"), []);
    assert.deepEqual(marked("@ ana", "ana"), []);
    assert.deepEqual(marked("@", "ana"), []);
    assert.ok(!mentions("ana", "ana"), "the name without @");
    assert.ok(mentions("cc @ana", "ana"));
  });

  test("the shared name vectors (chat-proto's): a mention in any spelling of the same name", () => {
    const file = new URL("../../crates/chat-proto/tests/name_keys.json", import.meta.url);
    const { vectors } = JSON.parse(readFileSync(file, "utf8")) as { vectors: { raw: string; display: string; key: string }[] };
    for (const v of vectors) {
      for (const written of [v.display, v.key]) {
        assert.deepEqual(marked(`oi @${written} tudo bem`, v.raw), [`@${written}`], `@${written} mentions ${JSON.stringify(v.raw)}`);
      }
      assert.deepEqual(marked(`oi @${v.key}x`, v.raw), [], `@${v.key}x is someone else`);
    }
  });

  test("the segments put back together are the text, unchanged", () => {
    for (const text of ["<b>@ana</b>", "a @ana b @ANA c", "😀@ana😀", "@ana\u0301"]) {
      assert.equal(splitMentions(text, "ana").map((s) => s.text).join(""), text);
    }
    assert.deepEqual(marked("<b>@ana</b>", "ana"), ["@ana"]);
    assert.deepEqual(marked("@ana\u0301", "ana"), [], "a combining mark makes another name");
  });
});
