// The server is stopped and started again (same port, same SQLite store)
// while two pages are open: both show that they are reconnecting, then
// that they are back, and then hold every message — those sent before the
// stop, the one typed while the server was down, those sent after the
// restart before the pages were back, and live ones — once each and in
// order.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  assertInOrderOnce,
  assertNoProblems,
  closePage,
  connected,
  DESKTOP,
  newPage,
  PHONE,
  screenshot,
  send,
  shownMessages,
  signIn,
  waitForTexts,
} from "../lib/browser.mjs";
import { ConsoleClient, sleep } from "../lib/server.mjs";
import { fixtures, whySkip } from "../lib/setup.mjs";

const skip = whySkip();

/** While the server is down the browser logs its failed connection attempts: expected here. */
const DOWN = [/WebSocket connection to .* failed/, /ERR_CONNECTION_REFUSED/];

describe("a server restart", { skip }, () => {
  const shared = fixtures();

  it("two pages resume with every message once and in order", async () => {
    const { server, browser } = shared;
    const alice = await newPage(browser, DESKTOP);
    const bob = await newPage(browser, PHONE);
    await signIn(alice, server, "alice", ["resume"]);
    await signIn(bob, server, "bob", ["resume"]);
    const before = ["before 1 (alice)", "before 2 (bob)", "before 3 (alice)"];
    await send(alice, before[0]);
    await waitForTexts(bob, [before[0]]);
    await send(bob, before[1]);
    await waitForTexts(alice, [before[1]]);
    await send(alice, before[2]);
    for (const page of [alice, bob]) await waitForTexts(page, before);

    await server.halt();
    for (const page of [alice, bob]) await page.waitForSelector('#conn[data-state="reconnecting"]');
    // Typed while the server is down: the library sends it once it is back.
    const whileDown = "typed by alice while the server was down";
    await send(alice, whileDown);
    await screenshot(alice, "desktop-reconnecting");
    await screenshot(bob, "phone-reconnecting");
    // Down long enough for the pages' reconnect backoff to grow past the restart.
    await sleep(3_000);

    await server.run();
    // Sent right after the restart, most likely before the pages are back:
    // they then get these as the backlog of their rejoin.
    const writer = ConsoleClient.start(server, "carol", ["resume"]);
    await writer.waitFor(/^joined resume /);
    const afterRestart = Array.from({ length: 10 }, (_, i) => `after the restart ${i + 1} (carol)`);
    for (const text of afterRestart) writer.say(text);
    await writer.waitFor(/^sent resume \d+$/);
    for (let n = 1; n < afterRestart.length; n += 1) await writer.waitFor(new RegExp(`^message resume \\d+ carol: after the restart ${n + 1} `));

    for (const page of [alice, bob]) {
      await connected(page, 30_000);
      assert.match(await page.textContent("#conn-text"), /Back|Connected/);
    }
    await screenshot(alice, "desktop-back");
    const live = "live after the pages came back (bob)";
    await send(bob, live);
    await writer.waitFor(/^message resume \d+ bob: live after the pages came back/);
    await writer.quit();

    const all = [...before, whileDown, ...afterRestart, live];
    for (const page of [alice, bob]) await waitForTexts(page, all, 30_000);
    const a = await shownMessages(alice);
    const b = await shownMessages(bob);
    assertInOrderOnce(a, all);
    assert.equal(a.length, all.length, `alice shows exactly the ${all.length} messages: ${JSON.stringify(a.map((m) => m.text))}`);
    assert.deepEqual(b, a, "both pages show the same messages in the same order");
    assert.deepEqual(
      a.map((m) => m.seq),
      Array.from({ length: all.length }, (_, i) => i + 1),
      "sequences 1..N",
    );
    // Nothing pending is left: the message typed while down came back as itself.
    assert.equal(await alice.$$eval("#messages li.pending", (items) => items.length), 0);
    assertNoProblems(alice, DOWN);
    assertNoProblems(bob, DOWN);
    await closePage(alice);
    await closePage(bob);
  });
});
