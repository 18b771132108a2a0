// The page's origin and its protections, seen from the browser: a page
// from a foreign Origin cannot open a session on /v1/ws (the server
// answers the handshake with 403), while the same script on the server's
// own page can; the page is served with its security headers and loads
// with no CSP violation.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { describe, it } from "node:test";
import { assertNoProblems, closePage, FOREIGN_HOST, newPage } from "../lib/browser.mjs";
import { freePort } from "../lib/server.mjs";
import { fixtures, whySkip } from "../lib/setup.mjs";

const skip = whySkip();

/** Opens a WebSocket to `url` as the page would; resolves with whether it opened, and its close code. */
function tryOpen(page, url) {
  return page.evaluate(
    (target) =>
      new Promise((resolve) => {
        // name.<base64url("mallory")>
        const socket = new WebSocket(target, ["chat.v1", "name.bWFsbG9yeQ"]);
        socket.binaryType = "arraybuffer";
        socket.onopen = () => {
          resolve({ opened: true, code: 0 });
          socket.close(1000);
        };
        socket.onclose = (event) => resolve({ opened: false, code: event.code });
      }),
    url,
  );
}

describe("origins", { skip }, () => {
  const shared = fixtures();

  it("a page from a foreign Origin is refused, the page's own origin is not", async () => {
    const { server, browser } = shared;
    // Another site on this machine: http://evil.test:PORT (the browser maps
    // the name to 127.0.0.1), so the browser's own local-network checks do
    // not apply and the refusal is the chat server's.
    const site = createServer((_request, response) => {
      response.writeHead(200, { "content-type": "text/html" });
      response.end("<!doctype html><title>elsewhere</title><p>a foreign page");
    });
    const port = await freePort();
    await new Promise((resolve) => site.listen(port, "127.0.0.1", resolve));
    const page = await newPage(browser);
    const refusals = [];
    page.on("websocket", (socket) => socket.on("socketerror", (error) => refusals.push(String(error))));
    await page.goto(`http://${FOREIGN_HOST}:${port}/`);
    assert.equal(await page.evaluate(() => location.origin), `http://${FOREIGN_HOST}:${port}`);
    const foreign = await tryOpen(page, server.ws);
    site.close();
    assert.deepEqual(foreign, { opened: false, code: 1006 }, "the handshake fails");
    assert.ok(
      refusals.some((e) => /403/.test(e)) || page.problems.some((p) => /403/.test(p)),
      `the browser saw a 403: ${JSON.stringify([...refusals, ...page.problems])}`,
    );
    await closePage(page);

    const own = await newPage(browser);
    await own.goto(server.http);
    assert.deepEqual(await tryOpen(own, server.ws), { opened: true, code: 0 }, "the page's own origin may");
    assertNoProblems(own);
    await closePage(own);
  });

  it("the page comes with its security headers", async () => {
    const { server, browser } = shared;
    const page = await newPage(browser);
    const response = await page.goto(server.http);
    const headers = response.headers();
    assert.equal(response.status(), 200);
    assert.equal(headers["content-type"], "text/html; charset=utf-8");
    assert.equal(headers["x-content-type-options"], "nosniff");
    const csp = headers["content-security-policy"];
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, new RegExp(`connect-src 'self' ws://127\\.0\\.0\\.1:${server.port} wss://127\\.0\\.0\\.1:${server.port}`));
    assert.ok(headers["cache-control"]);
    for (const [path, type] of [
      ["/app.js", "text/javascript; charset=utf-8"],
      ["/app.css", "text/css; charset=utf-8"],
    ]) {
      const asset = await fetch(`${server.http}${path}`);
      assert.equal(asset.status, 200);
      assert.equal(asset.headers.get("content-type"), type);
    }
    // Loaded, with scripts and styles from 'self' only, and nothing refused.
    await page.waitForSelector("#signin-name");
    assert.equal(await page.evaluate(() => getComputedStyle(document.body).margin), "0px", "the stylesheet applied");
    assertNoProblems(page);
    await closePage(page);
  });
});
