// The message box: Enter sends to the room shown (Shift+Enter starts a new
// line), the text waits in the list as "sending…" until the message comes
// back from the server (recognised by its client message id), and a send
// the server refuses stays there, marked, with the reason under the box.
// Editing one of the user's messages puts its text in the box: Enter saves
// the new text, Escape gives up.

import { ChatError, type ChatClient, type proto } from "@chat/client";
import { byId } from "./dom.js";
import { newMessageId } from "./ids.js";
import type { MessagesView } from "./messages-view.js";

/** How often the room is told again that this user is still typing. */
const TYPING_REPEAT_MS = 3_000;

/** A send not yet seen coming back. */
interface Pending {
  /** The room it went to. */
  room: string;
  /** Its text. */
  text: string;
  /** Its item in the list, while its room is shown. */
  item: HTMLLIElement | undefined;
  /** Why the server refused it, once it has. */
  failed: string | undefined;
}

/** The message box and the sends in flight. */
export class Composer {
  /** The form. */
  private readonly form: HTMLFormElement;
  /** The text box. */
  readonly input: HTMLTextAreaElement;
  /** Its (visually hidden) label, naming the room. */
  private readonly label: HTMLElement;
  /** Where refusals are shown. */
  private readonly error: HTMLElement;
  /** Sends in flight, by client message id. */
  private readonly pending = new Map<string, Pending>();
  /** The room sends go to (undefined: none shown). */
  private room: string | undefined;
  /** When the room was last told this user is typing (0: not since the last send). */
  private typingSaid = 0;
  /** The message being edited (undefined: the box writes a new one). */
  private editing: proto.MessageEvent | undefined;
  /** What the box held when editing began, given back when it ends. */
  private draft = "";

  /** Listens to the box until `signal` aborts (signing out). */
  constructor(
    private readonly client: ChatClient,
    private readonly view: MessagesView,
    signal: AbortSignal,
  ) {
    this.form = byId("composer", HTMLFormElement);
    this.input = byId("composer-text", HTMLTextAreaElement);
    this.label = byId("composer-label", HTMLElement);
    this.error = byId("composer-error", HTMLElement);
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    }, { signal });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      } else if (event.key === "Escape" && this.editing !== undefined) {
        event.preventDefault();
        this.stopEditing();
      }
    }, { signal });
    this.input.addEventListener("input", () => {
      this.fit();
      this.sayTyping();
    }, { signal });
  }

  /** Points the box at `room` (undefined: no room) and shows that room's sends in flight. */
  target(room: string | undefined): void {
    // Another room: the one left behind hears that this user stopped.
    if (room !== this.room) {
      this.stopTyping();
      // An edit does not follow to another room; a draft does, as before.
      if (this.editing !== undefined) this.stopEditing();
    }
    this.room = room;
    this.input.disabled = room === undefined;
    this.labelFor(room);
    for (const send of this.pending.values()) {
      send.item = send.room === room ? this.view.addPending(send.text) : undefined;
      if (send.item !== undefined && send.failed !== undefined) this.markFailed(send);
    }
  }

  /** A message came back: if it is one of ours in flight, it is no longer pending. */
  arrived(clientMessageId: string): void {
    const send = this.pending.get(clientMessageId);
    if (send === undefined) return;
    send.item?.remove();
    this.pending.delete(clientMessageId);
  }

  /** Forgets the sends in flight to `room` (it was left: they can no longer arrive). */
  forget(room: string): void {
    for (const [id, send] of this.pending) if (send.room === room) this.pending.delete(id);
  }

  /** Puts one of the user's messages in the box to be edited (Enter saves, Escape gives up). */
  startEdit(message: proto.MessageEvent): void {
    if (message.room !== this.room) return;
    this.stopTyping();
    if (this.editing === undefined) this.draft = this.input.value;
    this.editing = message;
    this.input.value = message.text;
    this.fit();
    this.label.textContent = `Edit message ${message.sequence} in ${message.room}`;
    this.error.textContent = "Editing a message: Enter saves, Escape cancels.";
    this.input.focus();
  }

  /** Shows `text` (a refusal) under the box. */
  showError(text: string): void {
    this.error.textContent = text;
  }

  /** Leaves editing; the box holds its draft again and writes new messages. */
  private stopEditing(): void {
    this.editing = undefined;
    this.input.value = this.draft;
    this.draft = "";
    this.fit();
    this.labelFor(this.room);
  }

  /** Labels the box for writing to `room` (undefined: none) and clears the line under it. */
  private labelFor(room: string | undefined): void {
    this.label.textContent = room === undefined ? "Message" : `Message to ${room}`;
    this.input.placeholder = room === undefined ? "Join a room to write" : `Message #${room} (Enter sends, Shift+Enter: new line)`;
    this.error.textContent = "";
  }

  /** Saves the box's text as the new text of the message being edited. */
  private saveEdit(message: proto.MessageEvent): void {
    const text = this.input.value;
    if (text.trim() === "" || text === message.text) {
      this.stopEditing();
      return;
    }
    this.stopEditing();
    this.client.edit(message.room, message.sequence, text).catch((error: unknown) => {
      const why = error instanceof ChatError ? `${error.code}: ${error.message.replace(/^[A-Z_]+: /, "")}` : String(error);
      if (this.room === message.room) this.error.textContent = `Not saved: ${why}`;
    });
  }

  /** Sends the box's text to the room shown (or saves the edit under way). */
  private submit(): void {
    if (this.editing !== undefined) {
      this.saveEdit(this.editing);
      return;
    }
    const text = this.input.value;
    const room = this.room;
    if (room === undefined || text.trim() === "") return;
    this.input.value = "";
    this.fit();
    this.error.textContent = "";
    // The message ends the typing; the next keystroke says it afresh.
    this.typingSaid = 0;
    const id = newMessageId();
    const send: Pending = { room, text, item: this.view.addPending(text), failed: undefined };
    this.pending.set(id, send);
    this.client.send(room, text, { clientMessageId: id }).catch((error: unknown) => {
      if (!this.pending.has(id)) return;
      send.failed = error instanceof ChatError ? `${error.code}: ${error.message.replace(/^[A-Z_]+: /, "")}` : String(error);
      if (send.item !== undefined) this.markFailed(send);
      if (this.room === room) this.error.textContent = `Not sent: ${send.failed}`;
    });
  }

  /**
   * Tells the room this user is typing: at most every 3 s while there is
   * text; once the box is emptied, that it stopped. Never waited for: one
   * refused (rate limited, not connected) or lost matters to nobody.
   */
  private sayTyping(): void {
    const room = this.room;
    const now = Date.now();
    // Editing an old message is not typing a new one.
    if (room === undefined || this.editing !== undefined) return;
    if (this.input.value.trim() === "") {
      this.stopTyping();
      return;
    }
    if (now - this.typingSaid < TYPING_REPEAT_MS) return;
    this.typingSaid = now;
    this.client.typing(room, true).catch(() => {});
  }

  /** Tells the room shown that this user stopped typing, if it was told otherwise. */
  private stopTyping(): void {
    if (this.typingSaid === 0 || this.room === undefined) return;
    this.typingSaid = 0;
    this.client.typing(this.room, false).catch(() => {});
  }

  /** Shows that `send` was refused. */
  private markFailed(send: Pending): void {
    if (send.item === undefined) return;
    send.item.classList.add("failed");
    const state = send.item.querySelector(".muted");
    if (state !== null) state.textContent = `not sent (${send.failed})`;
  }

  /** Grows the box with its text, up to the CSS maximum. */
  private fit(): void {
    this.input.style.height = "auto";
    this.input.style.height = `${this.input.scrollHeight + 2}px`;
  }
}
