// Unit tests of reading the signed token from the page URL (src/auth-token.ts).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { nameFromToken, tokenFromUrl } from "../src/auth-token";
import { roomFromFragment } from "../src/fragment";

const b64url = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url");
const jwt = (claims: object) => `${b64url({ alg: "HS256" })}.${b64url(claims)}.c2ln`;

describe("token from the URL", () => {
  const token = jwt({ sub: "alice-1", name: "Alice" });

  test("the fragment's token=, beside room=, or else ?token=", () => {
    assert.equal(tokenFromUrl(`#token=${token}`, ""), token);
    assert.equal(tokenFromUrl(`#room=lobby&token=${token}`, ""), token);
    assert.equal(tokenFromUrl("", `?token=${token}&x=1`), token);
    assert.equal(tokenFromUrl(`#token=${token}`, "?token=a.b.c"), token, "the fragment wins");
    assert.equal(tokenFromUrl("#room=lobby", ""), "");
    assert.equal(tokenFromUrl("", ""), "");
  });

  test("anything that is not a JWT is ignored", () => {
    for (const bad of ["#token=", "#token=%E0%A4%A", "#token=abc", "#token=a.b.c.d", "#token=<script>.a.b"]) {
      assert.equal(tokenFromUrl(bad, ""), "", bad);
    }
  });

  test("a token in the fragment is not a room name", () => {
    assert.equal(roomFromFragment(`#token=${token}`), "");
    assert.equal(roomFromFragment(`#token=${token}&room=team`), "team");
  });

  test("the name shown is the name claim, else sub", () => {
    assert.equal(nameFromToken(token), "Alice");
    assert.equal(nameFromToken(jwt({ sub: "bob" })), "bob");
    assert.equal(nameFromToken(jwt({ sub: "Zoë", name: "" })), "Zoë");
    assert.equal(nameFromToken("garbage"), "");
    assert.equal(nameFromToken("a.%%%.c"), "");
  });
});
