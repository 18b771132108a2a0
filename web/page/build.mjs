// Builds the chat page into crates/chat-server/assets/, which chat-server
// embeds (include_bytes!) and serves at /: app.js (src/main.ts bundled with
// the client library from ../client/src by esbuild, minified), app.css,
// index.html and favicon.svg (copied). The outputs are committed, so
// running the server never needs Node.
//
//   node build.mjs          write the outputs
//   node build.mjs --check  fail if the committed outputs differ from a fresh build

import * as esbuild from "esbuild";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "../../crates/chat-server/assets");
const banner = "/* Built from web/page/src (and web/client/src) by `npm run build` in web/page: do not edit. */";
// Browsers the page is built for (BigInt, optional chaining, CSS grid).
const target = ["es2020", "chrome90", "firefox90", "safari15"];

/** Every output file, by name: its bytes from a fresh build. */
async function build() {
  if (!existsSync(join(here, "../client/node_modules"))) {
    throw new Error("web/client/node_modules is missing: run `npm ci` in web/client first (the page bundles the client library)");
  }
  const common = { bundle: true, minify: true, write: false, target, charset: "utf8", logLevel: "warning", banner: { js: banner, css: banner } };
  const js = await esbuild.build({
    ...common,
    entryPoints: [join(here, "src/main.ts")],
    outfile: join(out, "app.js"),
    format: "iife",
    tsconfig: join(here, "tsconfig.json"),
  });
  const css = await esbuild.build({ ...common, entryPoints: [join(here, "src/app.css")], outfile: join(out, "app.css") });
  return {
    "app.js": js.outputFiles[0].contents,
    "app.css": css.outputFiles[0].contents,
    "index.html": readFileSync(join(here, "src/index.html")),
    "favicon.svg": readFileSync(join(here, "src/favicon.svg")),
  };
}

const outputs = await build();
if (process.argv.includes("--check")) {
  const stale = Object.entries(outputs).filter(([name, bytes]) => {
    const path = join(out, name);
    return !existsSync(path) || !Buffer.from(bytes).equals(readFileSync(path));
  });
  if (stale.length > 0) {
    console.error(`crates/chat-server/assets/ is not what web/page builds: ${stale.map(([n]) => n).join(", ")} differ.`);
    console.error("Run `npm run build` in web/page and commit the result.");
    process.exit(1);
  }
  console.log(`crates/chat-server/assets/ matches a fresh build (${Object.keys(outputs).join(", ")})`);
} else {
  for (const [name, bytes] of Object.entries(outputs)) writeFileSync(join(out, name), bytes);
  console.log(`wrote ${Object.keys(outputs).map((n) => `crates/chat-server/assets/${n}`).join(", ")}`);
}
