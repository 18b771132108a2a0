// "Bob is typing…" under the room shown: who else is typing in each room, as
// the library's last `typing` event for it said (each event is the room's
// whole state), less the typists whose message arrived since, forgotten when
// the event's time passes.

import type { EventOf } from "@chat/client";

/** The longest an event is shown without another, whatever the server says. */
const LONGEST_MS = 60_000;

/** Who else is typing in a room. */
interface RoomTyping {
  /** The first few, by user id, with their display names. */
  listed: Map<string, string>;
  /** How many are typing: the listed ones and the rest. */
  count: number;
  /** When it is forgotten unless another event comes (ms since the epoch). */
  until: number;
}

/** The typing line and what it is made of. */
export class TypingView {
  /** Who else is typing, by room. */
  private readonly rooms = new Map<string, RoomTyping>();
  /** The room shown (undefined: none). */
  private room: string | undefined;
  /** Redraws when the room shown's typists are due to be forgotten. */
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly line: HTMLElement) {}

  /** Who else is typing in one of the user's rooms now; `you` is left out. */
  on(event: EventOf<"typing">, you: string | undefined): void {
    if (event.count === 0) {
      this.rooms.delete(event.room);
    } else {
      const listed = new Map<string, string>();
      for (const m of event.typists) if (m.userId !== you) listed.set(m.userId, m.displayName || "someone");
      const until = Date.now() + Math.min(event.expiresAfterMs, LONGEST_MS);
      this.rooms.set(event.room, { listed, count: event.count, until });
    }
    if (event.room === this.room) this.render();
  }

  /** The user left `room`: nobody is typing there any more. */
  forget(room: string): void {
    this.rooms.delete(room);
    if (room === this.room) this.render();
  }

  /** `userId`'s message arrived in `room`: they are no longer typing. */
  sent(room: string, userId: string): void {
    const typing = this.rooms.get(room);
    if (typing?.listed.delete(userId) !== true) return;
    typing.count = Math.max(typing.count - 1, 0);
    if (room === this.room) this.render();
  }

  /** Shows `room`'s typists (undefined: no room). */
  show(room: string | undefined): void {
    this.room = room;
    this.render();
  }

  /** Forgets everything (signing out). */
  clear(): void {
    this.rooms.clear();
    this.show(undefined);
  }

  private render(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const now = Date.now();
    const typing = this.room === undefined ? undefined : this.rooms.get(this.room);
    const live = typing !== undefined && typing.until > now && typing.count > 0 ? typing : undefined;
    if (typing !== undefined && live === undefined && this.room !== undefined) this.rooms.delete(this.room);
    this.line.textContent = live === undefined ? "" : sentence([...live.listed.values()], live.count);
    if (live !== undefined) this.timer = setTimeout(() => this.render(), Math.max(live.until - now, 0) + 10);
  }
}

/** "Ann is typing…", "Ann and Bob are typing…", "Ann, Bob and 3 others are typing…". */
export function sentence(names: string[], count: number): string {
  const total = Math.max(count, Math.min(names.length, 2));
  const others = (n: number) => (n === 1 ? "1 other" : `${n} others`);
  if (total === 0) return "";
  if (names.length === 0) return total === 1 ? "someone is typing…" : `${total} people are typing…`;
  if (total === 1) return `${names[0]} is typing…`;
  if (names.length === 1) return `${names[0]} and ${others(total - 1)} are typing…`;
  if (total === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names[0]}, ${names[1]} and ${others(total - 2)} are typing…`;
}
