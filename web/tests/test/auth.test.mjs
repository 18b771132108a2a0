// Signing in on a server with authentication (auth.mode = "jwt"): a name
// alone is refused, and the form says why (close code 4401, reason
// `missing`); a token signed by the server's key signs in, as the name in
// the token.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertNoProblems, closePage, connected, newPage, send, waitForTexts } from "../lib/browser.mjs";
import { fixtures, whySkip } from "../lib/setup.mjs";

const skip = whySkip();

describe("a server with authentication", { skip }, () => {
  const shared = fixtures({
    CHAT_AUTH__MODE: "jwt",
    CHAT_AUTH__SECRET: "a web-tests secret of at least thirty-two bytes",
  });

  it("refuses a name with the reason, and takes a token", async () => {
    const { server, browser } = shared;
    const page = await newPage(browser);
    await page.goto(server.http);
    await page.fill("#signin-name", "intruder");
    await page.click("#signin-submit");
    await page.waitForSelector('#signin-status[data-kind="error"]');
    assert.match(await page.textContent("#signin-status"), /Sign-in refused \(missing\): this server requires a token/);
    assert.ok(await page.isHidden("#chat"));

    await page.fill("#signin-name", "");
    await page.fill("#signin-token", server.token("grace-id", "Grace"));
    await page.click("#signin-submit");
    await connected(page);
    assert.equal(await page.textContent("#me-name"), "Grace");
    await send(page, "signed in with a token");
    await waitForTexts(page, ["signed in with a token"]);
    // The browser logs the refused handshake's close; nothing else.
    assertNoProblems(page, [/WebSocket connection to .* failed/]);
    await closePage(page);
  });
});
