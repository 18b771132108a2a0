// Unit tests of the reconnect backoff: growth, cap and jitter bounds, as
// the Rust client's `Backoff` (250 ms doubling to 10 s, times [0.5, 1)).

import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../src/backoff.js";

test("delays grow from 250 ms, cap at 10 s and carry jitter in [0.5, 1)", () => {
  const backoff = new Backoff();
  for (let attempt = 0; attempt < 40; attempt++) {
    const base = Math.min(250 * 2 ** Math.min(attempt, 20), 10_000);
    for (let i = 0; i < 50; i++) {
      const delay = backoff.delayMs(attempt);
      assert.ok(delay >= base / 2 && delay < base, `attempt ${attempt}: ${delay} vs ${base}`);
    }
  }
});

test("the jitter spans its whole range", () => {
  assert.equal(new Backoff(100, 2_000, () => 0).delayMs(0), 50);
  assert.ok(new Backoff(100, 2_000, () => 0.999999).delayMs(0) < 100);
  assert.ok(new Backoff(100, 2_000, () => 0.999999).delayMs(0) > 99.9);
  assert.equal(new Backoff(100, 2_000, () => 0).delayMs(3), 400);
  assert.equal(new Backoff(100, 2_000, () => 0).delayMs(10), 1_000);
});
