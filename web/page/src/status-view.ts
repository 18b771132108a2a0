// The connection indicator in the top bar — connecting, connected,
// reconnecting (with the attempt and the wait), back (for a few seconds
// after a reconnect), stopped — and the server notifications under it,
// newest first, each dismissible. Both are live regions, so a screen
// reader hears the changes.

import type { proto } from "@chat/client";
import { byId, el } from "./dom.js";
import { shownTime } from "./time.js";

/** Where the connection stands, as the indicator shows it (also its `data-state`). */
export type Shown = "connecting" | "connected" | "reconnecting" | "back" | "stopped";

/** How long "back" is shown after a reconnect before it turns into "connected". */
const BACK_MS = 5_000;
/** Notifications kept on screen. */
const MAX_NOTICES = 3;

/** The connection indicator. */
export class ConnectionView {
  /** The indicator (`data-state` drives its colour). */
  private readonly root: HTMLElement;
  /** Its text. */
  private readonly text: HTMLElement;
  /** The details beside it (why, the next attempt); left out on narrow screens. */
  private readonly detail: HTMLElement;
  /** Turns "back" into "connected". */
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor() {
    this.root = byId("conn", HTMLElement);
    this.text = byId("conn-text", HTMLElement);
    this.detail = byId("conn-detail", HTMLElement);
  }

  /** Shows `state` with `detail` (e.g. why it is reconnecting). */
  show(state: Shown, detail = ""): void {
    clearTimeout(this.timer);
    this.root.dataset.state = state;
    this.text.textContent = LABELS[state];
    this.detail.textContent = detail === "" ? "" : `(${detail})`;
    this.root.title = detail;
    if (state === "back") this.timer = setTimeout(() => this.show("connected"), BACK_MS);
  }

  /** What it shows now. */
  get state(): Shown {
    return (this.root.dataset.state ?? "connecting") as Shown;
  }
}

/** The words of each state. */
const LABELS: Record<Shown, string> = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  back: "Back: connected again",
  stopped: "Disconnected",
};

/** The notifications strip. */
export class NoticesView {
  /** The section (hidden when empty). */
  private readonly root: HTMLElement;
  /** Its list, newest first. */
  private readonly list: HTMLOListElement;

  constructor() {
    this.root = byId("notices", HTMLElement);
    this.list = byId("notice-list", HTMLOListElement);
  }

  /**
   * Shows a server notification on top of the older ones; the same text
   * as the newest (the periodic notification) only updates its time.
   */
  add(notification: proto.Notification): void {
    const time = shownTime(notification.serverTimeUnixMs || BigInt(Date.now()));
    const newest = this.list.firstElementChild;
    if (newest !== null && newest.querySelector(".text")?.textContent === notification.text) {
      const shown = newest.querySelector("time");
      if (shown !== null) {
        shown.textContent = time.short;
        shown.setAttribute("datetime", time.iso);
        shown.title = time.long;
      }
      return;
    }
    const dismiss = el("button", { text: "Dismiss", attrs: { type: "button", "aria-label": "Dismiss notification" } });
    const item = el(
      "li",
      { className: "notice" },
      el("time", { className: "muted", text: time.short, attrs: { datetime: time.iso, title: time.long } }),
      el("span", { className: "text", text: notification.text }),
      dismiss,
    );
    dismiss.addEventListener("click", () => this.remove(item));
    this.list.prepend(item);
    while (this.list.children.length > MAX_NOTICES) this.list.lastElementChild?.remove();
    this.root.hidden = false;
  }

  /** Removes one notification (hiding the strip when none is left). */
  private remove(item: HTMLElement): void {
    const next = (item.nextElementSibling ?? item.previousElementSibling)?.querySelector("button");
    item.remove();
    if (this.list.children.length === 0) {
      this.root.hidden = true;
      byId("composer-text", HTMLTextAreaElement).focus();
    } else {
      next?.focus();
    }
  }

  /** Removes them all (signing out). */
  clear(): void {
    this.list.replaceChildren();
    this.root.hidden = true;
  }
}
