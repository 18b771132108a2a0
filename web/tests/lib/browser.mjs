// The browser side of the tests: the system's Chromium (Debian's package,
// never a downloaded one: CHROMIUM_PATH or /usr/bin/chromium), headless,
// driven by playwright-core; pages at desktop or phone size that record
// every script error and CSP violation; and what a person does and sees
// on the chat page (sign in, send, read the messages in order).

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { root } from "./server.mjs";

/** Where the system's Chromium is, if anywhere. */
export function chromiumPath() {
  const candidates = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"];
  return candidates.find((path) => path !== undefined && path !== "" && existsSync(path));
}

/** Where screenshots go: CHAT_SCREENSHOT_DIR, or target/web-screenshots/ at the top of the repository. */
export const screenshotDir = resolve(process.env.CHAT_SCREENSHOT_DIR ?? join(root, "../../target/web-screenshots"));

/** Window sizes. */
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/** A host name that is not the server's (a "foreign" site), which this browser finds on 127.0.0.1. */
export const FOREIGN_HOST = "evil.test";

/** Starts headless Chromium. */
export function launch() {
  const args = ["--disable-dev-shm-usage", `--host-resolver-rules=MAP ${FOREIGN_HOST} 127.0.0.1`];
  // Chromium's sandbox cannot run as root (CI runs as root).
  if (process.getuid?.() === 0) args.push("--no-sandbox");
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args });
}

/**
 * A fresh page (its own context: storage, cookies) of `size`, with every
 * page error and console error recorded in `page.problems`.
 */
export async function newPage(browser, size = DESKTOP, options = {}) {
  const context = await browser.newContext({ viewport: size, isMobile: size === PHONE, hasTouch: size === PHONE, ...options });
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (error) => page.problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") page.problems.push(`console error: ${message.text()}`);
  });
  return page;
}

/** Closes `page`'s context. */
export async function closePage(page) {
  await page.context().close();
}

/** Opens the chat page of `server` and signs in as `name` into `rooms`; waits until connected. */
export async function signIn(page, server, name, rooms = ["lobby"]) {
  await page.goto(server.http);
  await page.fill("#signin-name", name);
  await page.fill("#signin-rooms", rooms.join(" "));
  await page.click("#signin-submit");
  await connected(page);
}

/** Waits until the page shows the chat, connected (or back). */
export async function connected(page, timeout = 15_000) {
  await page.waitForSelector("#chat:not([hidden])", { timeout });
  await page.waitForSelector('#conn[data-state="connected"], #conn[data-state="back"]', { timeout });
}

/** Types `text` into the message box and presses Enter. */
export async function send(page, text) {
  await page.fill("#composer-text", text);
  await page.press("#composer-text", "Enter");
}

/** The messages the page shows, in order: room, sequence, sender, time, text. */
export function shownMessages(page) {
  return page.$$eval("#messages li.message", (items) =>
    items.map((li) => ({
      room: li.dataset.room,
      seq: Number(li.dataset.seq),
      sender: li.querySelector(".sender")?.textContent ?? "",
      time: li.querySelector("time")?.getAttribute("datetime") ?? "",
      text: li.querySelector(".text")?.textContent ?? "",
    })),
  );
}

/** Waits until the page shows a message with each of `texts`. */
export async function waitForTexts(page, texts, timeout = 15_000) {
  try {
    await page.waitForFunction(
      (wanted) => {
        const shown = new Set([...document.querySelectorAll("#messages li.message .text")].map((p) => p.textContent));
        return wanted.every((text) => shown.has(text));
      },
      texts,
      { timeout },
    );
  } catch (error) {
    const shown = (await shownMessages(page)).map((m) => m.text);
    throw new Error(`the page does not show ${JSON.stringify(texts.filter((t) => !shown.includes(t)))}; it shows ${JSON.stringify(shown)}`, { cause: error });
  }
}

/**
 * Asserts that `messages` (one room's, as shown) are in sequence order with
 * no gap and no duplicate, and hold each of `texts` exactly once.
 */
export function assertInOrderOnce(messages, texts) {
  const seqs = messages.map((m) => m.seq);
  for (let i = 1; i < seqs.length; i += 1) {
    assert.equal(seqs[i], seqs[i - 1] + 1, `sequences are consecutive: ${seqs.join(",")}`);
  }
  for (const text of texts) {
    assert.equal(messages.filter((m) => m.text === text).length, 1, `${JSON.stringify(text)} is shown once`);
  }
}

/** Saves a screenshot of `page` as `name`.png under the screenshot folder (`fullPage`: all of it, not the window); returns its path. */
export async function screenshot(page, name, { fullPage = false } = {}) {
  mkdirSync(screenshotDir, { recursive: true });
  const path = join(screenshotDir, `${name}.png`);
  await page.screenshot({ path, fullPage });
  return path;
}

/** Asserts that the page had no script error and no console error (a CSP violation is one). */
export function assertNoProblems(page, allowed = []) {
  const problems = page.problems.filter((p) => !allowed.some((pattern) => pattern.test(p)));
  assert.deepEqual(problems, [], "no page or console errors");
}
