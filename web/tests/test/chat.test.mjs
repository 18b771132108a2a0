// The chat page in Chromium against a real chat-server: two pages and the
// `chat` console client in one room see each other's messages (with
// sender and time), each other's presence and typing; a notification shows; a
// reload shows the history; scrolling up loads older messages down to the
// first; the page works with the keyboard alone; and screenshots at
// desktop and phone size are saved under target/web-screenshots/.

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
import { ConsoleClient } from "../lib/server.mjs";
import { fixtures, whySkip } from "../lib/setup.mjs";

const skip = whySkip();

describe("the chat page", { skip }, () => {
  const shared = fixtures();

  it("two pages and the console client in one room see each other's messages, presence and typing", async () => {
    const { server, browser } = shared;
    const alice = await newPage(browser, DESKTOP);
    const bob = await newPage(browser, PHONE);
    await signIn(alice, server, "alice", ["lobby"]);
    await signIn(bob, server, "bob", ["lobby"]);
    const carol = ConsoleClient.start(server, "carol", ["lobby"]);
    await carol.waitFor(/^joined lobby /);

    // Presence: alice's member list shows all three, live.
    await alice.waitForFunction(() => {
      const names = [...document.querySelectorAll("#member-list li")].map((li) => li.firstChild?.textContent);
      return ["alice", "bob", "carol"].every((n) => names.includes(n));
    });
    await alice.waitForSelector("#messages li.event >> text=carol joined");

    // Typing: bob types; alice's page and the console say so.
    await bob.fill("#composer-text", "hello from b");
    await alice.waitForSelector("#typing >> text=bob is typing…");
    await carol.waitFor(/^typing lobby 1 bob$/);

    await send(alice, "hello from alice");
    await send(bob, "hello from bob");
    await carol.waitFor(/^message lobby \d+ bob: hello from bob$/);
    carol.say("hello from carol");
    await carol.waitFor(/^sent lobby \d+$/);

    const texts = ["hello from alice", "hello from bob", "hello from carol"];
    for (const page of [alice, bob]) await waitForTexts(page, texts);
    // His message ended his typing.
    assert.equal(await alice.textContent("#typing"), "");
    await carol.waitFor(/^message lobby \d+ alice: hello from alice$/);

    const seen = await shownMessages(alice);
    assertInOrderOnce(seen, texts);
    assert.deepEqual(
      seen.map((m) => [m.sender, m.text]),
      [
        ["alice", "hello from alice"],
        ["bob", "hello from bob"],
        ["carol", "hello from carol"],
      ],
    );
    for (const m of seen) assert.ok(!Number.isNaN(Date.parse(m.time)), `a time on ${m.text}`);
    assert.deepEqual(await shownMessages(bob), seen, "both pages show the same messages");

    // A notification from the server reaches both pages.
    await server.broadcast("Maintenance at noon");
    for (const page of [alice, bob]) await page.waitForSelector("#notice-list li >> text=Maintenance at noon");

    // Presence: carol leaves; the pages say so.
    await carol.quit();
    await alice.waitForSelector("#messages li.event >> text=carol left");
    await alice.waitForFunction(() => ![...document.querySelectorAll("#member-list li")].some((li) => li.firstChild?.textContent === "carol"));

    await screenshot(alice, "desktop-chat");
    await screenshot(bob, "phone-chat");
    assertNoProblems(alice);
    assertNoProblems(bob);
    await closePage(alice);
    await closePage(bob);
  });

  it("edits and deletes: from the page's buttons, seen by another page and the console, kept across a reload", async () => {
    const { server, browser } = shared;
    const gina = await newPage(browser);
    const hank = await newPage(browser, PHONE);
    await signIn(gina, server, "gina", ["changes"]);
    await signIn(hank, server, "hank", ["changes"]);
    const ivan = ConsoleClient.start(server, "ivan", ["changes"]);
    await ivan.waitFor(/^joined changes /);
    await send(gina, "helo everyone");
    await send(gina, "a secret");
    await waitForTexts(hank, ["helo everyone", "a secret"]);
    await ivan.waitFor(/^message changes 2 gina: a secret$/);
    // hank sees no Edit or Delete on gina's messages (only React).
    assert.equal(await hank.locator('#messages li.message .actions button:text-is("Edit")').count(), 0);
    assert.equal(await hank.locator('#messages li.message .actions button:text-is("Delete")').count(), 0);

    // gina edits her first message: its text goes into the box; Enter saves.
    await gina.click('#messages li.message[data-seq="1"] button:text-is("Edit")');
    assert.equal(await gina.inputValue("#composer-text"), "helo everyone");
    await gina.fill("#composer-text", "hello everyone");
    await gina.press("#composer-text", "Enter");
    for (const page of [gina, hank]) {
      await page.waitForSelector('#messages li.message[data-seq="1"] >> text=hello everyone');
      await page.waitForSelector('#messages li.message[data-seq="1"] .edited');
    }
    await ivan.waitFor(/^edited changes 3 #1 gina: hello everyone$/);
    // Escape gives up an edit: nothing changes.
    await gina.click('#messages li.message[data-seq="1"] button:text-is("Edit")');
    await gina.press("#composer-text", "Escape");
    assert.equal(await gina.inputValue("#composer-text"), "");

    // She deletes the second: Delete asks to be pressed again.
    await gina.click('#messages li.message[data-seq="2"] button:text-is("Delete")');
    await gina.click('#messages li.message[data-seq="2"] button:text-is("Really delete?")');
    for (const page of [gina, hank]) await page.waitForSelector('#messages li.message.deleted[data-seq="2"]');
    await ivan.waitFor(/^deleted changes 4 #2 gina$/);
    assert.ok(!(await hank.textContent("#messages")).includes("a secret"), "the text is gone");

    // The changes are not messages of their own, and a reload shows the same.
    const before = await shownMessages(hank);
    assert.deepEqual(before.map((m) => m.seq), [1, 2]);
    await hank.reload();
    await connected(hank);
    await hank.waitForSelector('#messages li.message.deleted[data-seq="2"]');
    await hank.waitForSelector('#messages li.message[data-seq="1"] .edited');
    assert.deepEqual((await shownMessages(hank)).map((m) => [m.seq, m.text]), [
      [1, "hello everyone"],
      [2, "This message was deleted."],
    ]);
    await screenshot(gina, "desktop-edited");
    await ivan.quit();
    assertNoProblems(gina);
    assertNoProblems(hank);
    await closePage(gina);
    await closePage(hank);
  });

  it("reactions: from the palette and the chips, seen by another page and the console, kept across a reload", async () => {
    const { server, browser } = shared;
    const mia = await newPage(browser);
    const ned = await newPage(browser, PHONE);
    await signIn(mia, server, "mia", ["reacts"]);
    await signIn(ned, server, "ned", ["reacts"]);
    const olga = ConsoleClient.start(server, "olga", ["reacts"]);
    await olga.waitFor(/^joined reacts /);
    await send(mia, "who is coming?");
    await waitForTexts(ned, ["who is coming?"]);
    const item = '#messages li.message[data-seq="1"]';
    // ned reacts from the palette.
    await ned.click(`${item} button:text-is("React")`);
    await ned.click(`${item} button[aria-label="React with 🎉"]`);
    for (const page of [mia, ned]) await page.waitForSelector(`${item} .reaction:text-is("🎉 1")`);
    await olga.waitFor(/^reacted reacts 2 #1 ned: 🎉$/);
    // mia joins in with the chip; ned takes his back with his.
    await mia.click(`${item} .reaction:text-is("🎉 1")`);
    await ned.waitForSelector(`${item} .reaction:text-is("🎉 2")`);
    assert.equal(await mia.getAttribute(`${item} .reaction`, "aria-pressed"), "true");
    await ned.click(`${item} .reaction:text-is("🎉 2")`);
    await mia.waitForSelector(`${item} .reaction:text-is("🎉 1")`);
    await olga.waitFor(/^unreacted reacts 4 #1 ned: 🎉$/);
    // The console reacts to the latest message by default.
    olga.say("/react 👍");
    await olga.waitFor(/^react-sent reacts 5$/);
    await ned.waitForSelector(`${item} .reaction:text-is("👍 1")`);
    // The reactions are not messages of their own, and a reload shows the same.
    await ned.reload();
    await connected(ned);
    await ned.waitForSelector(`${item} .reaction:text-is("🎉 1")`);
    await ned.waitForSelector(`${item} .reaction:text-is("👍 1")`);
    assert.deepEqual((await shownMessages(ned)).map((m) => m.seq), [1]);
    await screenshot(mia, "desktop-reactions");
    await olga.quit();
    assertNoProblems(mia);
    assertNoProblems(ned);
    await closePage(mia);
    await closePage(ned);
  });

  it("a direct conversation: opened from the page, listed for both users as @name, closed to others", async () => {
    const { server, browser } = shared;
    const pia = await newPage(browser);
    const quin = await newPage(browser, PHONE);
    await signIn(pia, server, "pia", ["lobby"]);
    await signIn(quin, server, "quin", ["lobby"]);
    await pia.fill("#direct-user", "quin");
    await pia.press("#direct-user", "Enter");
    await pia.waitForSelector('#room-list button.open:text-is("@quin")');
    assert.equal(await pia.textContent("#room-title"), "@quin", "opened and shown");
    const room = await pia.getAttribute('#room-list button.open:text-is("@quin")', "data-room");
    assert.match(room, /^dm\.[0-9a-f]{40}$/);
    await send(pia, "just between us");
    // quin's page lists it as @pia (without switching to it) and shows it on a click.
    await quin.waitForSelector('#room-list button.open:text-is("@pia")');
    assert.notEqual(await quin.textContent("#room-title"), "@pia");
    await quin.click('#room-list button.open:text-is("@pia")');
    await waitForTexts(quin, ["just between us"]);
    await send(quin, "sure");
    await waitForTexts(pia, ["sure"]);
    // Nobody else: the console client is refused.
    const rex = ConsoleClient.start(server, "rex", ["lobby"]);
    await rex.waitFor(/^joined lobby /);
    rex.say(`/join ${room}`);
    await rex.waitFor(/^error PERMISSION_DENIED/);
    // A reload keeps it, with its name.
    await quin.reload();
    await connected(quin);
    await quin.waitForSelector('#room-list button.open:text-is("@pia")');
    await rex.quit();
    assertNoProblems(pia);
    assertNoProblems(quin);
    await closePage(pia);
    await closePage(quin);
  });

  it("unread counts come from the server, and a room shown is marked read for every session", async () => {
    const { server, browser } = shared;
    const kate = await newPage(browser);
    await signIn(kate, server, "kate", ["unread-a", "unread-b"]);
    const leo = ConsoleClient.start(server, "leo", ["unread-b"]);
    await leo.waitFor(/^joined unread-b /);
    const unreadOf = (page, room) =>
      page.$eval(`#room-list button.open[data-room="${room}"]`, (b) => b.querySelector(".unread")?.textContent ?? "0");
    // kate shows unread-a; leo writes twice in unread-b.
    leo.say("first for kate");
    leo.say("second for kate");
    await leo.waitFor(/^sent unread-b 2$/);
    await kate.waitForFunction(() => document.querySelector('#room-list button.open[data-room="unread-b"] .unread')?.textContent === "2");
    // A reload (a new session) still shows them unread: the count is the server's.
    await kate.reload();
    await connected(kate);
    await kate.waitForFunction(() => document.querySelector('#room-list button.open[data-room="unread-b"] .unread')?.textContent === "2");
    // kate opens the room: read, here and for her other sessions.
    const other = ConsoleClient.start(server, "kate", ["unread-b"]);
    await other.waitFor(/^joined unread-b members=\d+ latest=2 read=0 unread=2$/);
    await kate.click('#room-list button.open[data-room="unread-b"]');
    await other.waitFor(/^read unread-b 2 kate$/);
    assert.equal(await unreadOf(kate, "unread-b"), "0");
    await kate.reload();
    await connected(kate);
    await kate.waitForSelector('#room-list button.open[data-room="unread-a"]');
    assert.equal(await unreadOf(kate, "unread-b"), "0", "marked read on the server");
    await other.quit();
    await leo.quit();
    assertNoProblems(kate);
    await closePage(kate);
  });

  it("a reload shows the history", async () => {
    const { server, browser } = shared;
    const dave = await newPage(browser);
    await signIn(dave, server, "dave", ["reload"]);
    const texts = ["first before the reload", "second before the reload", "third before the reload"];
    for (const text of texts) await send(dave, text);
    await waitForTexts(dave, texts);

    await dave.reload();
    await connected(dave);
    await waitForTexts(dave, texts);
    assertInOrderOnce(await shownMessages(dave), texts);
    assert.equal(await dave.textContent("#history-state"), "The beginning of #reload.");
    // Signed in again as the same person, in the same room.
    assert.equal(await dave.textContent("#me-name"), "dave");
    assert.equal(await dave.getAttribute('#room-list button.open[aria-current="true"]', "data-room"), "reload");
    assertNoProblems(dave);
    await closePage(dave);
  });

  it("scrolling up loads older messages, down to the first", async () => {
    const { server, browser } = shared;
    const writer = ConsoleClient.start(server, "writer", ["long"]);
    await writer.waitFor(/^joined long /);
    const texts = Array.from({ length: 120 }, (_, i) => `old message ${i + 1}`);
    for (const text of texts) writer.say(text);
    await writer.waitFor(/^sent long 120$/);
    await writer.quit();

    const erin = await newPage(browser);
    await signIn(erin, server, "erin", ["long"]);
    // The first page: the latest 50.
    await waitForTexts(erin, texts.slice(70));
    assert.equal((await shownMessages(erin)).length, 50);
    for (let i = 0; i < 10; i += 1) {
      const before = (await shownMessages(erin)).length;
      if (before === 120) break;
      await erin.$eval("#scroller", (s) => s.scrollTo(0, 0));
      await erin.waitForFunction((n) => document.querySelectorAll("#messages li.message").length > n, before);
    }
    await erin.waitForSelector("#history-state >> text=The beginning of #long.");
    const shown = await shownMessages(erin);
    assert.deepEqual(shown.map((m) => m.text), texts, "every message once, in order");
    assertInOrderOnce(shown, texts);
    assertNoProblems(erin);
    await closePage(erin);
  });

  it("works with the keyboard alone: sign in, send, join and leave a room", async () => {
    const { server, browser } = shared;
    const page = await newPage(browser);
    await page.goto(server.http);
    // The form starts focused on the name.
    assert.equal(await page.evaluate(() => document.activeElement?.id), "signin-name");
    await page.keyboard.type("frank");
    await page.keyboard.press("Enter");
    await connected(page);
    // After signing in, the message box has the focus.
    assert.equal(await page.evaluate(() => document.activeElement?.id), "composer-text");
    await page.keyboard.type("typed, not clicked");
    await page.keyboard.press("Enter");
    await waitForTexts(page, ["typed, not clicked"]);

    await tabTo(page, (el) => el.id === "join-room");
    assert.ok(await focusRingShown(page), "the focused field shows a focus ring");
    await page.keyboard.type("keys");
    await page.keyboard.press("Enter");
    await page.waitForSelector('#room-list button.open[aria-current="true"][data-room="keys"]');
    await tabTo(page, (el) => el.getAttribute("aria-label") === "Leave keys");
    assert.ok(await focusRingShown(page), "the focused button shows a focus ring");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.querySelector('#room-list [data-room="keys"]') === null);
    assert.equal(await page.getAttribute('#room-list button.open[aria-current="true"]', "data-room"), "lobby");
    assertNoProblems(page);
    await closePage(page);
  });

  it("saves screenshots of the sign-in form at desktop and phone size", async () => {
    const { server, browser } = shared;
    for (const [size, name] of [
      [DESKTOP, "desktop-signin"],
      [PHONE, "phone-signin"],
    ]) {
      const page = await newPage(browser, size);
      await page.goto(server.http);
      await page.waitForSelector("#signin-name");
      await screenshot(page, name);
      assertNoProblems(page);
      await closePage(page);
    }
  });
});

/** Presses Tab (at most 40 times) until the focused element satisfies `wanted`. */
async function tabTo(page, wanted) {
  const test = `(${wanted.toString()})(document.activeElement)`;
  for (let i = 0; i < 40; i += 1) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(test)) return;
  }
  throw new Error(`Tab never reached the element wanted (${wanted})`);
}

/** Whether the focused element draws a visible outline. */
function focusRingShown(page) {
  return page.evaluate(() => {
    const style = getComputedStyle(document.activeElement);
    return style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
  });
}
