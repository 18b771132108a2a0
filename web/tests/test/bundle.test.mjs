// The page chat-server embeds (crates/chat-server/assets/) is what its
// source builds: `npm run check` in web/page type-checks the source and
// compares a fresh esbuild bundle with the committed files.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { root } from "../lib/server.mjs";

const page = join(root, "../page");
const installed = existsSync(join(page, "node_modules")) && existsSync(join(root, "../client/node_modules"));
const skip = installed
  ? false
  : "web/page or web/client has no node_modules (run `npm ci` in both)";
if (skip && process.env.CHAT_TEST_REQUIRE_BROWSER === "1") throw new Error(`${skip}, and CHAT_TEST_REQUIRE_BROWSER=1`);

it("the committed page is a fresh build of web/page", { skip }, () => {
  const run = spawnSync("npm", ["run", "--silent", "check"], { cwd: page, encoding: "utf8" });
  assert.equal(run.status, 0, `npm run check in web/page failed:\n${run.stdout}\n${run.stderr}`);
});
