// Checks that the committed protobuf types (src/gen/) are exactly what
// proto/chat/v1/chat.proto generates, so the contract has one source
// (the same check as `npm run check-generated`).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

/** web/client, from dist/test/. */
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

test("src/gen/ is what proto/chat/v1/chat.proto generates", () => {
  const run = spawnSync(process.execPath, [join(root, "scripts", "check-generated.mjs")], { encoding: "utf8" });
  assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
});
