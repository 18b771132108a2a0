// "Bob is typing…" under the room shown: who is typing in each room, from
// the library's `typing` events, each forgotten when they stop, when their
// message arrives, or when the event's time passes without a repeat.

import type { EventOf } from "@chat/client";

/** The longest a typist is shown without a repeat, whatever the server says. */
const LONGEST_MS = 60_000;
/** The most typists kept per room. */
const TYPISTS_KEPT = 50;

/** Someone typing in a room. */
interface Typist {
  /** Their display name. */
  name: string;
  /** When they are forgotten unless the event is repeated (ms since the epoch). */
  until: number;
}

/** The typing line and what it is made of. */
export class TypingView {
  /** Who is typing, by room, then by user id. */
  private readonly typists = new Map<string, Map<string, Typist>>();
  /** The room shown (undefined: none). */
  private room: string | undefined;
  /** Redraws when the next typist shown is due to be forgotten. */
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly line: HTMLElement) {}

  /** Someone started or stopped typing in one of the user's rooms. */
  on(event: EventOf<"typing">): void {
    const now = Date.now();
    const room = this.typists.get(event.room) ?? new Map<string, Typist>();
    for (const [id, t] of room) if (t.until <= now) room.delete(id);
    room.delete(event.member.userId);
    if (event.typing && room.size < TYPISTS_KEPT) {
      room.set(event.member.userId, { name: event.member.displayName || "someone", until: now + Math.min(event.expiresAfterMs, LONGEST_MS) });
    }
    if (room.size > 0) this.typists.set(event.room, room);
    else this.typists.delete(event.room);
    if (event.room === this.room) this.render();
  }

  /** The user left `room`: nobody is typing there any more. */
  forget(room: string): void {
    this.typists.delete(room);
    if (room === this.room) this.render();
  }

  /** `userId`'s message arrived in `room`: they are no longer typing. */
  sent(room: string, userId: string): void {
    if (this.typists.get(room)?.delete(userId) === true && room === this.room) this.render();
  }

  /** Shows `room`'s typists (undefined: no room). */
  show(room: string | undefined): void {
    this.room = room;
    this.render();
  }

  /** Forgets everything (signing out). */
  clear(): void {
    this.typists.clear();
    this.show(undefined);
  }

  private render(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const now = Date.now();
    const room = this.room === undefined ? undefined : this.typists.get(this.room);
    const live = [...(room?.entries() ?? [])].filter(([, t]) => t.until > now);
    if (room !== undefined) for (const [id, t] of room) if (t.until <= now) room.delete(id);
    const names = live.map(([, t]) => t.name);
    this.line.textContent =
      names.length === 0
        ? ""
        : names.length === 1
          ? `${names[0]} is typing…`
          : names.length === 2
            ? `${names[0]} and ${names[1]} are typing…`
            : `${names[0]} and ${names.length - 1} others are typing…`;
    if (live.length > 0) {
      const next = Math.min(...live.map(([, t]) => t.until));
      this.timer = setTimeout(() => this.render(), Math.max(next - now, 0) + 10);
    }
  }
}
