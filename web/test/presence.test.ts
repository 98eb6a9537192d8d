// Unit tests of the presence collapsing, the member list order and the
// throttle (src/presence.ts). Run with `npm test`.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  compareNames,
  describePresence,
  listNames,
  PresenceRun,
  Throttle,
  withMember,
  withoutMember,
  type PresenceKind,
} from "../src/presence";
import { FakeClock } from "./fakes";

function run(events: [string, PresenceKind][]): PresenceRun {
  const r = new PresenceRun();
  for (const [name, kind] of events) r.add(name, kind);
  return r;
}

describe("listNames", () => {
  test("one to three names in full, then two and the number of others", () => {
    assert.equal(listNames([]), "");
    assert.equal(listNames(["Ana"]), "Ana");
    assert.equal(listNames(["Ana", "Bruno"]), "Ana and Bruno");
    assert.equal(listNames(["Ana", "Bruno", "Carla"]), "Ana, Bruno and Carla");
    assert.equal(listNames(["Ana", "Bruno", "Carla", "Dan"]), "Ana, Bruno and 2 others");
    assert.equal(listNames(["Ana", "Bruno", "Carla", "Dan", "Eva"]), "Ana, Bruno and 3 others");
  });

  test("the limit is adjustable, never below two", () => {
    assert.equal(listNames(["a", "b", "c", "d", "e"], 5), "a, b, c, d and e");
    assert.equal(listNames(["a", "b", "c", "d", "e"], 4), "a, b, c and 2 others");
    assert.equal(listNames(["a", "b", "c"], 1), "a and 2 others");
    assert.equal(listNames(["a", "b"], 1), "a and b");
  });
});

describe("PresenceRun", () => {
  test("a single event reads as before", () => {
    assert.equal(run([["bob", "joined"]]).text(), "bob joined");
    assert.equal(run([["bob", "left"]]).text(), "bob left");
  });

  test("consecutive joins collapse into one line", () => {
    const r = run([
      ["Ana", "joined"],
      ["Bruno", "joined"],
      ["Carla", "joined"],
      ["Dan", "joined"],
      ["Eva", "joined"],
    ]);
    assert.equal(r.text(), "Ana, Bruno and 3 others joined");
    assert.equal(r.size, 5);
    assert.equal(r.events, 5);
  });

  test("joins and leaves of different people are grouped by effect", () => {
    const r = run([
      ["Carla", "left"],
      ["Ana", "joined"],
      ["Bruno", "joined"],
      ["Dan", "left"],
    ]);
    assert.equal(r.text(), "Ana and Bruno joined; Carla and Dan left");
    assert.deepEqual(r.groups(), [
      { effect: "joined", names: ["Ana", "Bruno"] },
      { effect: "left", names: ["Carla", "Dan"] },
    ]);
  });

  test("someone who joined and left within the run is listed once, as having come and gone", () => {
    const r = run([
      ["Ana", "joined"],
      ["Bruno", "joined"],
      ["Ana", "left"],
    ]);
    assert.equal(r.text(), "Bruno joined; Ana joined and left");
    assert.equal(r.effectOf("Ana"), "joined-left");
    assert.equal(r.effectOf("Bruno"), "joined");
    assert.equal(r.effectOf("Carla"), null);
  });

  test("left and came back; only the first and last event of a person count", () => {
    assert.equal(run([["Ana", "left"], ["Ana", "joined"]]).text(), "Ana left and came back");
    assert.equal(run([["Ana", "joined"], ["Ana", "left"], ["Ana", "joined"]]).text(), "Ana joined");
    assert.equal(run([["Ana", "left"], ["Ana", "joined"], ["Ana", "left"]]).text(), "Ana left");
  });

  test("names are one person whatever their case or normalisation; the latest spelling shows", () => {
    // "é" precomposed and decomposed, and a different case: the server's name identity.
    const r = run([
      ["Jos\u00e9", "joined"],
      ["JOSE\u0301", "left"],
    ]);
    assert.equal(r.size, 1);
    assert.equal(r.text(), "JOSE\u0301 joined and left");
  });

  test("a flood: memory grows with people, not events, and no one is listed twice", () => {
    const r = new PresenceRun();
    for (let round = 0; round < 200; round++) {
      for (let i = 0; i < 10; i++) r.add(`user${i}`, round % 2 === 0 ? "joined" : "left");
    }
    // Everyone ends as they began: joined first, left last.
    r.add("user0", "joined"); // ... but user0 is back at the end
    assert.equal(r.events, 2001);
    assert.equal(r.size, 10);
    const groups = r.groups();
    const all = groups.flatMap((g) => g.names);
    assert.equal(all.length, 10);
    assert.equal(new Set(all).size, 10);
    assert.deepEqual(groups, [
      { effect: "joined", names: ["user0"] },
      { effect: "joined-left", names: ["user1", "user2", "user3", "user4", "user5", "user6", "user7", "user8", "user9"] },
    ]);
    assert.equal(r.text(), "user0 joined; user1, user2 and 7 others joined and left");
  });

  test("groups come in a fixed order", () => {
    const r = run([
      ["d", "left"],
      ["d", "joined"],
      ["c", "joined"],
      ["c", "left"],
      ["b", "left"],
      ["a", "joined"],
    ]);
    assert.deepEqual(
      r.groups().map((g) => g.effect),
      ["joined", "left", "joined-left", "left-joined"],
    );
    assert.equal(r.text(), "a joined; b left; c joined and left; d left and came back");
  });

  test("describePresence skips empty groups", () => {
    assert.equal(
      describePresence([
        { effect: "joined", names: [] },
        { effect: "left", names: ["x"] },
      ]),
      "x left",
    );
    assert.equal(describePresence([]), "");
  });
});

describe("member list order", () => {
  test("as people read names: case, accents aside; numbers by value; a total order", () => {
    const names = ["zé", "user10", "Bob", "Álvaro", "user2", "alice", "Alice", "ana"];
    const sorted = [...names].sort(compareNames);
    assert.deepEqual(sorted, ["alice", "Alice", "Álvaro", "ana", "Bob", "user2", "user10", "zé"].sort(compareNames));
    assert.ok(sorted.indexOf("Álvaro") < sorted.indexOf("ana"));
    assert.ok(sorted.indexOf("ana") < sorted.indexOf("Bob"));
    assert.ok(sorted.indexOf("user2") < sorted.indexOf("user10"));
    assert.ok(sorted.indexOf("Bob") < sorted.indexOf("zé"));
    // Names that differ only in case are distinct and ordered the same way every time.
    assert.notEqual(compareNames("alice", "Alice"), 0);
    assert.equal(Math.sign(compareNames("alice", "Alice")), -Math.sign(compareNames("Alice", "alice")));
  });

  test("withMember / withoutMember keep the list sorted, once each, without touching the input", () => {
    let list: string[] = [];
    const input = ["m", "B", "z", "a", "user10", "user2", "é", "B"];
    for (const n of input) list = withMember(list, n);
    assert.deepEqual(list, [...new Set(input)].sort(compareNames));
    const before = list.slice();
    const without = withoutMember(list, "m");
    assert.deepEqual(list, before, "input unchanged");
    assert.deepEqual(
      without,
      before.filter((n) => n !== "m"),
    );
    assert.deepEqual(withoutMember(without, "not there"), without);
    // Exact names only: "b" is not "B".
    assert.deepEqual(withoutMember(without, "b"), without);
  });

  test("agrees with a full sort on random lists", () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const alphabet = ["a", "A", "b", "á", "1", "2", "10", "_", "z", "Z"];
    for (let trial = 0; trial < 50; trial++) {
      let list: string[] = [];
      const truth = new Set<string>();
      for (let i = 0; i < 60; i++) {
        const name = Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join("");
        if (rnd() < 0.6) {
          list = withMember(list, name);
          truth.add(name);
        } else {
          list = withoutMember(list, name);
          truth.delete(name);
        }
        assert.deepEqual(list, [...truth].sort(compareNames));
      }
    }
  });
});

describe("Throttle", () => {
  test("runs at once when idle, then at most once per period, with the last request honoured", () => {
    const clock = new FakeClock();
    let runs = 0;
    const t = new Throttle(() => runs++, 100, clock);
    t.request();
    assert.equal(runs, 1, "idle: at once");
    for (let i = 0; i < 500; i++) {
      t.request();
      clock.advance(1);
    }
    // 500 ms of requests: one run at once, then one per 100 ms.
    assert.ok(runs <= 6, `runs: ${runs}`);
    assert.ok(runs >= 5, `runs: ${runs}`);
    t.request();
    clock.advance(100);
    const settled = runs;
    assert.equal(t.pending, false);
    clock.advance(1000);
    assert.equal(runs, settled, "nothing more without requests");
  });

  test("flush runs a pending request now; cancel drops it", () => {
    const clock = new FakeClock();
    let runs = 0;
    const t = new Throttle(() => runs++, 100, clock);
    t.request();
    t.request();
    assert.equal(runs, 1);
    assert.equal(t.pending, true);
    t.flush();
    assert.equal(runs, 2);
    assert.equal(t.pending, false);
    t.flush();
    assert.equal(runs, 2, "nothing pending, nothing run");
    clock.advance(10);
    t.request();
    t.cancel();
    clock.advance(1000);
    assert.equal(runs, 2);
  });
});
