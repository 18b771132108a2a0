// The message list of the room shown: each message (sender, local time,
// text, an "edited" mark or the tombstone of a deleted one, and on the
// reader's own messages the buttons to edit and delete them), presence lines and resume gaps in sequence order, and the user's
// own messages still waiting for their acknowledgement at the end. Every
// item carries a numeric sort key, so an item arriving late (a history
// page, a resumed backlog) is inserted where it belongs; the view follows
// new messages at the bottom unless the reader has scrolled up, and keeps
// the reader's place when older messages are added above.

import { applicationSender, type proto } from "@chat/client";
import { el } from "./dom.js";
import { isChange, type Gap, type Note, type Room } from "./room.js";
import { shownTime } from "./time.js";

/** Sort keys: four slots per sequence (message, gap, then notes), pending sends last. */
const MESSAGE = 0;
const GAP = 1;
const NOTE = 2;
const PENDING = Number.MAX_SAFE_INTEGER;

/** Closer to the bottom than this (px) counts as "at the bottom": new messages keep it there. */
const STICKY_PX = 48;

/** The sort key of an item placed after sequence `after` (as `kind`). */
function keyOf(after: bigint, kind: number): number {
  return Number(after) * 4 + kind;
}

/** What the view needs to know about the reader. */
export interface Viewer {
  /** The reader's user id (their own messages are marked). */
  userId: string;
  /** Asks for the messages of a gap (the gap's button). */
  loadGap(room: string, gap: Gap): void;
  /** Starts editing one of the reader's messages (its Edit button). */
  edit(message: proto.MessageEvent): void;
  /** Takes back one of the reader's messages (its Delete button, pressed twice). */
  remove(message: proto.MessageEvent): void;
  /** Adds (or takes back) the reader's reaction `emoji` to a message. */
  react(message: proto.MessageEvent, emoji: string, add: boolean): void;
}

/** The reactions the React button offers (any other comes from elsewhere and shows the same). */
export const PALETTE = ["👍", "❤️", "😂", "🎉", "😮", "😢"];

/** Renders the shown room's messages into the list and keeps the scroll position sensible. */
export class MessagesView {
  /** The `<ol>` of messages. */
  private readonly list: HTMLOListElement;
  /** The scrolling container around it. */
  private readonly scroller: HTMLElement;
  /** Who reads, and how gaps are loaded. */
  private readonly viewer: Viewer;
  /** The room shown (undefined: none). */
  private room: string | undefined;

  constructor(list: HTMLOListElement, scroller: HTMLElement, viewer: Viewer) {
    this.list = list;
    this.scroller = scroller;
    this.viewer = viewer;
  }

  /** Shows `room` from scratch, scrolled to its newest message. */
  show(room: Room): void {
    this.room = room.name;
    this.list.replaceChildren();
    const items: HTMLLIElement[] = [];
    for (const message of room.messages()) items.push(this.messageItem(message));
    for (const gap of room.gaps) items.push(this.gapItem(room.name, gap));
    for (const note of room.notes) items.push(noteItem(note));
    items.sort((a, b) => sortKey(a) - sortKey(b));
    this.list.append(...items);
    this.scrollToBottom();
  }

  /** Forgets the room shown (none left). */
  showNothing(): void {
    this.room = undefined;
    this.list.replaceChildren();
  }

  /** Whether `room` is the one shown. */
  shows(room: string): boolean {
    return this.room === room;
  }

  /** Adds a live message (or one from a resumed backlog) to the room shown; a change is shown on its message instead. */
  addMessage(message: proto.MessageEvent): void {
    if (!isChange(message)) this.placeFollowing(this.messageItem(message));
  }

  /** Adds messages loaded above (a history page), keeping the reader's place. */
  addOlder(messages: proto.MessageEvent[]): void {
    const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
    for (const message of messages) if (!isChange(message)) this.place(this.messageItem(message));
    this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
  }

  /** Draws `message` again where it is (it was edited or deleted). */
  update(message: proto.MessageEvent): void {
    for (const item of this.list.querySelectorAll<HTMLLIElement>("li.message")) {
      if (item.dataset.seq === message.sequence.toString() && item.dataset.room === message.room) {
        item.replaceWith(this.messageItem(message));
        return;
      }
    }
  }

  /** Adds a presence line. */
  addNote(note: Note): void {
    this.placeFollowing(noteItem(note));
  }

  /** Re-draws the gap markers of `room` (after one was filled or added). */
  refreshGaps(room: Room): void {
    for (const item of this.list.querySelectorAll("li.gap")) item.remove();
    for (const gap of room.gaps) this.place(this.gapItem(room.name, gap));
  }

  /** Shows one of the user's sends while it waits for its acknowledgement; returns its item. */
  addPending(text: string): HTMLLIElement {
    const item = el(
      "li",
      { className: "pending mine", attrs: { "data-key": String(PENDING) } },
      el("div", { className: "head" }, el("span", { className: "sender", text: "You" }), el("span", { className: "muted", text: "sending…" })),
      el("p", { className: "text", text }),
    );
    this.placeFollowing(item);
    return item;
  }

  /** Inserts `item` and keeps the view at the bottom if it was there. */
  private placeFollowing(item: HTMLLIElement): void {
    const atBottom = this.atBottom();
    this.place(item);
    if (atBottom) this.scrollToBottom();
  }

  /** Inserts `item` after every item with a key not above its own (scanning from the end: most go last). */
  private place(item: HTMLLIElement): void {
    const key = sortKey(item);
    let before: Element | null = null;
    for (let node = this.list.lastElementChild; node !== null; node = node.previousElementSibling) {
      if (sortKey(node) <= key) break;
      before = node;
    }
    this.list.insertBefore(item, before);
  }

  /** Whether the reader is at (or near) the bottom. */
  private atBottom(): boolean {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < STICKY_PX;
  }

  /** Scrolls to the newest message. */
  scrollToBottom(): void {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  /** The item of one message: sender, local time, text, its marks; the reader's own marked, with their actions. */
  private messageItem(message: proto.MessageEvent): HTMLLIElement {
    const time = shownTime(message.serverTimeUnixMs);
    const sender = message.sender?.displayName ?? "?";
    const mine = message.sender?.userId === this.viewer.userId;
    const head = el(
      "div",
      { className: "head" },
      el("span", { className: "sender", text: sender }),
      el("time", { text: time.short, attrs: { datetime: time.iso, title: time.long } }),
    );
    // An application's bot or the system, whatever its display name says.
    const app = applicationSender(message.sender?.userId ?? "");
    if (app !== undefined) head.children[0]?.after(el("span", { className: "badge app", text: app }));
    if (message.editedAtUnixMs > 0n && !message.deleted) {
      const edited = shownTime(message.editedAtUnixMs);
      head.append(el("span", { className: "muted edited", text: "(edited)", attrs: { title: `edited ${edited.long}` } }));
    }
    if (!message.deleted) head.append(this.actions(message, mine));
    const body = message.deleted
      ? el("p", { className: "text tombstone", text: "This message was deleted." })
      : el("p", { className: "text", text: message.text });
    const reactions = message.deleted || message.reactions.length === 0 ? [] : [this.reactions(message)];
    return el(
      "li",
      {
        className: ["message", mine ? "mine" : "", message.deleted ? "deleted" : ""].filter(Boolean).join(" "),
        attrs: {
          "data-key": String(keyOf(message.sequence, MESSAGE)),
          "data-room": message.room,
          "data-seq": message.sequence.toString(),
          "data-client-id": message.clientMessageId,
        },
      },
      head,
      body,
      ...reactions,
    );
  }

  /** A message's reactions: one toggle per emoji, pressed when the reader gave it. */
  private reactions(message: proto.MessageEvent): HTMLElement {
    const row = el("div", { className: "reactions" });
    for (const r of message.reactions) {
      const mine = r.members.some((m) => m.userId === this.viewer.userId);
      const names = r.members.map((m) => m.displayName).join(", ") + (r.count > r.members.length ? ", …" : "");
      const chip = el("button", {
        className: "reaction",
        text: `${r.emoji} ${r.count}`,
        attrs: { type: "button", "aria-pressed": String(mine), title: names, "aria-label": `${r.emoji} ${r.count}: ${names}` },
      });
      chip.addEventListener("click", () => this.viewer.react(message, r.emoji, !mine));
      row.append(chip);
    }
    return row;
  }

  /**
   * A message's buttons: React (it opens the palette) on every message,
   * Edit and Delete on the reader's own; Delete asks to be pressed again.
   */
  private actions(message: proto.MessageEvent, mine: boolean): HTMLElement {
    const reactButton = el("button", { text: "React", attrs: { type: "button", "aria-label": `React to message ${message.sequence}`, "aria-expanded": "false" } });
    const palette = el("span", { className: "palette", attrs: { hidden: "" } });
    for (const emoji of PALETTE) {
      const choice = el("button", { text: emoji, attrs: { type: "button", "aria-label": `React with ${emoji}` } });
      choice.addEventListener("click", () => {
        palette.hidden = true;
        reactButton.setAttribute("aria-expanded", "false");
        this.viewer.react(message, emoji, true);
      });
      palette.append(choice);
    }
    reactButton.addEventListener("click", () => {
      palette.hidden = !palette.hidden;
      reactButton.setAttribute("aria-expanded", String(!palette.hidden));
    });
    if (!mine) return el("span", { className: "actions" }, palette, reactButton);
    const edit = el("button", { text: "Edit", attrs: { type: "button", "aria-label": `Edit message ${message.sequence}` } });
    edit.addEventListener("click", () => this.viewer.edit(message));
    const remove = el("button", { text: "Delete", attrs: { type: "button", "aria-label": `Delete message ${message.sequence}` } });
    remove.addEventListener("click", () => {
      if (remove.dataset.armed === "yes") {
        remove.disabled = true;
        this.viewer.remove(message);
      } else {
        remove.dataset.armed = "yes";
        remove.textContent = "Really delete?";
      }
    });
    remove.addEventListener("blur", () => {
      delete remove.dataset.armed;
      if (!remove.disabled) remove.textContent = "Delete";
    });
    return el("span", { className: "actions" }, palette, reactButton, edit, remove);
  }

  /** The marker of a gap, with a button that loads what is missing. */
  private gapItem(room: string, gap: Gap): HTMLLIElement {
    const count = gap.upTo - gap.after;
    const load = el("button", { text: "Load them", attrs: { type: "button" } });
    load.addEventListener("click", () => {
      load.disabled = true;
      this.viewer.loadGap(room, gap);
    });
    return el(
      "li",
      { className: "gap", attrs: { "data-key": String(keyOf(gap.after, GAP)) } },
      `${count} message${count === 1n ? "" : "s"} could not be resumed after the connection came back. `,
      load,
    );
  }
}

/** The sort key an item carries. */
function sortKey(node: Element): number {
  return Number((node as HTMLElement).dataset.key ?? PENDING);
}

/** The item of a presence line. */
function noteItem(note: Note): HTMLLIElement {
  const time = shownTime(note.atMs);
  return el(
    "li",
    { className: "event", attrs: { "data-key": String(keyOf(note.after, NOTE)) } },
    `${note.text} `,
    el("time", { text: time.short, attrs: { datetime: time.iso, title: time.long } }),
  );
}
