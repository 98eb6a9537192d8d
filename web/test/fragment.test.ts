// Unit tests of the page URL fragment parsing (src/fragment.ts). Run with `npm test`.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fragmentForRoom, roomFromFragment } from "../src/fragment";

describe("roomFromFragment", () => {
  test("no fragment, no room", () => {
    assert.equal(roomFromFragment(""), "");
    assert.equal(roomFromFragment("#"), "");
  });

  test("a bare fragment is the room, percent-decoded", () => {
    assert.equal(roomFromFragment("#lobby"), "lobby");
    assert.equal(roomFromFragment("lobby"), "lobby", "with or without the #");
    assert.equal(roomFromFragment("#sistemas%20distribu%C3%ADdos"), "sistemas distribuídos");
    assert.equal(roomFromFragment("#a+b"), "a+b", "a plus is a plus in the bare form");
    assert.equal(roomFromFragment("#%F0%9F%92%AC"), "💬");
  });

  test("#room=NAME, form-style, among other parameters", () => {
    assert.equal(roomFromFragment("#room=dev"), "dev");
    assert.equal(roomFromFragment("#room=dev%20ops"), "dev ops");
    assert.equal(roomFromFragment("#room=dev+ops"), "dev ops");
    assert.equal(roomFromFragment("#room=c%2B%2B"), "c++");
    assert.equal(roomFromFragment("#x=1&room=dev&y=2"), "dev");
    assert.equal(roomFromFragment("#room=first&room=second"), "first");
    assert.equal(roomFromFragment("#room="), "");
  });

  test("what fragmentForRoom writes reads back", () => {
    for (const room of ["lobby", "dev ops", "c++", "a&b=c#d", "100%", "sala é", "💬 chat", "room=x"]) {
      assert.equal(roomFromFragment(fragmentForRoom(room)), room, room);
    }
    assert.equal(fragmentForRoom("dev ops"), "#room=dev%20ops");
  });

  test("a malformed fragment is ignored, never thrown", () => {
    for (const bad of [
      "#%",
      "#%E0%A4%A",
      "#%E0%A4",
      "#%zz",
      "#abc%",
      "#%ED%A0%80", // an encoded lone surrogate
      "#%C0%AF", // overlong UTF-8
      "#%FF",
      "#room=%",
      "#room=%E0%A4%A",
      "#x=1&room=%C3",
    ]) {
      assert.doesNotThrow(() => roomFromFragment(bad), bad);
      assert.equal(roomFromFragment(bad), "", bad);
    }
  });

  test("a fragment that could not be a room name is ignored", () => {
    assert.equal(roomFromFragment(`#${"a".repeat(64)}`), "a".repeat(64));
    assert.equal(roomFromFragment(`#${"a".repeat(65)}`), "", "over 64 characters");
    assert.equal(roomFromFragment(`#${"💬".repeat(64)}`), "💬".repeat(64), "characters, not UTF-16 units");
    assert.equal(roomFromFragment("#%20lobby"), "", "leading space");
    assert.equal(roomFromFragment("#lobby%20"), "", "trailing space");
    assert.equal(roomFromFragment("#room=lobby+"), "", "trailing space, form-style");
    assert.equal(roomFromFragment("#%20"), "");
    assert.equal(roomFromFragment("#lo%0Abby"), "", "a control character");
    assert.equal(roomFromFragment("#lo%E2%80%8Bbby"), "", "a format character (U+200B)");
    assert.equal(roomFromFragment("#lo%E2%80%AEbby"), "", "a format character (U+202E)");
  });
});
