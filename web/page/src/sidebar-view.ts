// The two side lists: the rooms the user is in (each a button that opens
// it, with its count of unread messages, and a button that leaves it) and
// the members of the room shown (the user marked as "you").

import type { proto } from "@chat/client";
import { byId, el } from "./dom.js";
import { sortedMembers, type Room } from "./room.js";

/** What the room list asks for. */
export interface RoomActions {
  /** Show `room`. */
  open(room: string): void;
  /** Leave `room`. */
  leave(room: string): void;
}

/** The room list. */
export class RoomsView {
  /** The `<ul>`. */
  private readonly list: HTMLUListElement;
  /** Where clicks go. */
  private readonly actions: RoomActions;

  constructor(actions: RoomActions) {
    this.list = byId("room-list", HTMLUListElement);
    this.actions = actions;
  }

  /** Redraws the list; keeps keyboard focus on the same control if it had it. */
  render(rooms: Room[], current: string | undefined): void {
    const focused = document.activeElement instanceof HTMLElement ? document.activeElement.dataset.control : undefined;
    const items = rooms.map((room) => this.item(room, room.name === current));
    this.list.replaceChildren(...items);
    if (focused !== undefined) {
      const again = this.list.querySelector<HTMLElement>(`[data-control="${CSS.escape(focused)}"]`);
      (again ?? byId("join-room", HTMLInputElement)).focus();
    }
  }

  /** One room: open it, or leave it. */
  private item(room: Room, current: boolean): HTMLLIElement {
    const open = el(
      "button",
      {
        className: "open",
        attrs: { type: "button", "data-room": room.name, "data-control": `open:${room.name}` },
      },
      room.label,
    );
    if (current) open.setAttribute("aria-current", "true");
    if (room.unread > 0) {
      open.append(
        el("span", { className: "unread", text: String(room.unread), attrs: { "aria-hidden": "true" } }),
        el("span", { className: "visually-hidden", text: `, ${room.unread} unread` }),
      );
    }
    open.addEventListener("click", () => this.actions.open(room.name));
    const leave = el("button", {
      className: "leave",
      text: "Leave",
      attrs: {
        type: "button",
        // A room by its name; a direct conversation by the other user.
        "aria-label": `Leave ${room.label.startsWith("@") ? room.label : room.name}`,
        "data-control": `leave:${room.name}`,
      },
    });
    leave.addEventListener("click", () => this.actions.leave(room.name));
    return el("li", {}, open, leave);
  }
}

/** The member list of the room shown. */
export class MembersView {
  /** The `<ul>`. */
  private readonly list: HTMLUListElement;
  /** The count beside the heading. */
  private readonly count: HTMLElement;

  constructor() {
    this.list = byId("member-list", HTMLUListElement);
    this.count = byId("member-count", HTMLElement);
  }

  /** Shows `room`'s members (none: no room). */
  render(room: Room | undefined, you: proto.Member | undefined): void {
    const members = room === undefined ? [] : sortedMembers(room);
    const count = room === undefined ? 0 : Math.max(room.memberCount, members.length);
    this.count.textContent = room === undefined ? "" : `(${count})`;
    const items = members.map((member) => {
      const item = el("li", { attrs: { "data-user": member.userId } }, member.displayName);
      if (member.userId === you?.userId) item.append(el("span", { className: "you", text: "(you)" }));
      return item;
    });
    // A big room's join lists its first page only.
    if (count > members.length) items.push(el("li", { className: "more" }, `and ${count - members.length} more`));
    this.list.replaceChildren(...items);
  }
}
