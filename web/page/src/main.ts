// The page's entry point (bundled into app.js): starts the app once the
// document is parsed (the script is loaded with `defer`).

import { App } from "./app.js";

new App().start();
