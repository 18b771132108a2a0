// Whether the browser tests can run here, and the shared fixtures of a
// test file: one server and one browser, started before its tests and
// stopped after them. Without Chromium or the binaries the tests are
// skipped, saying why, unless CHAT_TEST_REQUIRE_BROWSER=1 (CI) makes
// that a failure.

import { after, before } from "node:test";
import { chromiumPath, launch } from "./browser.mjs";
import { missingBinaries, TestServer } from "./server.mjs";

/** Why the tests cannot run here (undefined: they can). */
export function whySkip() {
  const why = chromiumPath() === undefined ? "no Chromium (apt-get install chromium, or set CHROMIUM_PATH)" : missingBinaries();
  if (why !== undefined && process.env.CHAT_TEST_REQUIRE_BROWSER === "1") {
    throw new Error(`${why}, and CHAT_TEST_REQUIRE_BROWSER=1`);
  }
  return why;
}

/**
 * A server (with `env`) and a browser for the tests of one file, filled in
 * by `before` and closed by `after`.
 */
export function fixtures(env = {}) {
  const shared = { server: undefined, browser: undefined };
  before(async () => {
    if (whySkip() !== undefined) return;
    shared.server = await TestServer.start(env);
    shared.browser = await launch();
  });
  after(async () => {
    await shared.browser?.close();
    await shared.server?.stop();
  });
  return shared;
}
