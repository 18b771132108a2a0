// Routing the server's frames, in stream order: each reply to the request
// waiting for it (a rejoin's also becomes a `rejoined` event, ahead of the
// backlog that follows it), everything else to the application as events,
// raising the room's last seen sequence with every message.

import type { ServerFrame } from "./gen/chat/v1/chat_pb.js";
import type { Shared } from "./shared.js";

/** Routes one frame that arrived after the Welcome. */
export function dispatch(shared: Shared, frame: ServerFrame): void {
  const f = frame.frame;
  switch (f.case) {
    case "reply":
      shared.settle(Number(f.value.requestId), f.value.result);
      return;
    case "message":
      // Only rooms the client keeps track of; a message for another room
      // (it just left) must not start tracking one.
      if (shared.lastSeen.has(f.value.room)) shared.raiseLastSeen(f.value.room, f.value.sequence);
      shared.events.emit({ type: "message", message: f.value });
      return;
    case "membersChanged":
      shared.events.emit({
        type: "membersChanged",
        room: f.value.room,
        joined: f.value.joined,
        left: f.value.left,
        memberCount: f.value.memberCount,
      });
      return;
    // From a server older than `membersChanged`.
    case "memberJoined":
      shared.events.emit({ type: "memberJoined", room: f.value.room, member: memberOf(f.value.member) });
      return;
    case "memberLeft":
      shared.events.emit({ type: "memberLeft", room: f.value.room, member: memberOf(f.value.member) });
      return;
    case "notification":
      shared.events.emit({ type: "notification", notification: f.value });
      return;
    case "typing":
      shared.events.emit({
        type: "typing",
        room: f.value.room,
        typists: f.value.typists.map(memberOf),
        count: f.value.count,
        expiresAfterMs: f.value.expiresAfterMs,
      });
      return;
    case "directOpened":
      shared.events.emit({ type: "directOpened", conversation: f.value });
      return;
    case "readReceipts":
      shared.events.emit({ type: "readReceipts", room: f.value.room, positions: f.value.positions });
      return;
    case "removed":
      // Not rejoined after a reconnect.
      shared.forget(f.value.room);
      shared.events.emit({ type: "removed", room: f.value.room, reason: f.value.reason });
      return;
    // The notice is reported with `disconnected` when the session ends; a
    // second Welcome and an empty frame mean nothing.
    case "disconnect":
    case "welcome":
    case undefined:
      return;
  }
}

/** The member of a presence event (the contract always sets it). */
function memberOf<T>(member: T | undefined): T {
  return member ?? ({ userId: "", displayName: "" } as T);
}
