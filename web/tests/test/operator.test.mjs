// The operator's view (GET /admin/) in Chromium against a real chat-server:
// a wrong token is refused; the admin token shows the instance (ready,
// connections, backplane counters), the rooms with their member counts and
// a room's members, the live message rate, the recent warnings (a webhook
// whose receiver is down logs them), and broadcasts a notification that a
// chat page receives; a screenshot is saved under target/web-screenshots/.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertNoProblems, closePage, DESKTOP, newPage, screenshot, send, signIn, waitForTexts } from "../lib/browser.mjs";
import { ADMIN_TOKEN } from "../lib/server.mjs";
import { fixtures, whySkip } from "../lib/setup.mjs";

const skip = whySkip();

describe("the operator's view", { skip }, () => {
  const shared = fixtures({
    // A receiver nobody listens on: every stored message's delivery fails
    // and is logged at warn, which the view's "recent errors" shows.
    CHAT_WEBHOOKS__URL: "http://127.0.0.1:9/hooks",
    CHAT_WEBHOOKS__SECRET: "web-tests webhook secret, 32 bytes or more",
    CHAT_WEBHOOKS__RETRY_MIN: "200ms",
    CHAT_WEBHOOKS__RETRY_MAX: "1s",
  });

  it("shows the instance, rooms, members, message rate and recent errors, and broadcasts", async () => {
    const { server, browser } = shared;
    const ann = await newPage(browser, DESKTOP);
    await signIn(ann, server, "ann", ["ops"]);
    await send(ann, "hello ops");
    await waitForTexts(ann, ["hello ops"]);

    const view = await newPage(browser, DESKTOP);
    await view.goto(`${server.http}/admin/`);

    // A wrong token is refused, and the form says so.
    await view.fill("#token", "not-the-token");
    await view.click("#signin-submit");
    await view.waitForSelector('#signin-status[data-kind="error"]');
    assert.match(await view.textContent("#signin-status"), /Refused: 401/);
    assert.ok(await view.isHidden("#dashboard"));

    await view.fill("#token", ADMIN_TOKEN);
    await view.click("#signin-submit");
    await view.waitForSelector('#connection[data-state="connected"]');

    // The instance: ready, with ann's connection.
    const row = view.locator("#instances tbody tr").first();
    await row.locator("td >> text=ready").waitFor();
    const cells = await row.locator("td").allTextContents();
    assert.match(cells[0], /\(here\)/);
    assert.equal(cells[1], "ready");
    assert.equal(cells[2], "1", `one connection: ${cells}`);

    // The rooms, and a room's members.
    const room = view.locator('#rooms tr[data-room="ops"]');
    await room.waitFor();
    assert.equal((await room.locator("td").allTextContents())[1], "1");
    await room.locator("button").click();
    await view.waitForSelector("#members-list li >> text=ann");
    assert.match(await view.textContent("#members-title"), /Members of ops \(1\)/);

    // The live rate: messages sent now show within a poll or two.
    for (let i = 0; i < 10; i += 1) await send(ann, `busy ${i}`);
    await view.waitForFunction(() => Number(document.getElementById("rate").textContent) > 0, null, { timeout: 10_000 });
    assert.ok((await view.locator("#sparkline polyline").getAttribute("points")).length > 0);

    // Recent errors: the webhook's failed deliveries.
    await view.waitForSelector("#errors li >> text=webhook: delivery failed", { timeout: 10_000 });
    assert.ok(await view.isHidden("#errors-empty"));

    // A broadcast reaches the chat page.
    await view.fill("#broadcast-text", "Maintenance at noon");
    await view.click("#broadcast-submit");
    await view.waitForSelector('#broadcast-status[data-kind="ok"]');
    assert.match(await view.textContent("#broadcast-status"), /Sent: 1 sessions here/);
    await ann.waitForSelector("#notice-list li >> text=Maintenance at noon");

    await screenshot(view, "operator-view", { fullPage: true });
    // The refused sign-in's 401 is the one console error.
    assertNoProblems(view, [/status of 401/]);
    assertNoProblems(ann);
    await closePage(view);
    await closePage(ann);
  });
});
