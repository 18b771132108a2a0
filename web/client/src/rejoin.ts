// Joining the client's rooms again on a new session, each from the last
// sequence it saw (`since_sequence`), so that the backlog fills the gap.
// Each outcome is reported as a `rejoined` event when its reply arrives,
// in stream order; a join the server could not do now is tried again
// within the session.

import { create } from "@bufbuild/protobuf";
import { ChatError, type ChatErrorCode } from "./errors.js";
import { JoinRoomRequestSchema } from "./gen/chat/v1/chat_pb.js";
import type { Live, ReplyResult, Shared } from "./shared.js";

/** Marks every room as not yet rejoined on `live`; returns each room's "done" signal. */
export function planRejoins(shared: Shared, live: Live): Map<string, () => void> {
  const done = new Map<string, () => void>();
  for (const room of shared.rooms) {
    live.rejoining.set(room, new Promise((resolve) => done.set(room, resolve)));
  }
  return done;
}

/**
 * Rejoins every room of the plan, all at once in the plan's order (the server
 * answers in that order and reads their states together: a client in many
 * rooms is back after about one round trip, not one per room), signalling
 * each as done when its own rejoin is.
 */
export async function rejoin(shared: Shared, live: Live, done: Map<string, () => void>): Promise<void> {
  try {
    await Promise.all(
      [...done.keys()].map(async (room) => {
        if (shared.live !== live) return;
        await rejoinRoom(shared, live, room);
        live.rejoining.delete(room);
        done.get(room)!();
      }),
    );
  } finally {
    for (const [room, signal] of done) {
      live.rejoining.delete(room);
      signal();
    }
  }
}

/**
 * Rejoins `room`, retrying within the session while the server cannot do
 * it now (UNAVAILABLE, RATE_LIMITED, INTERNAL) or the reply is late, or the
 * client would sit connected but outside the room.
 */
async function rejoinRoom(shared: Shared, live: Live, room: string): Promise<void> {
  let delayMs = 100;
  while (shared.rooms.has(room) && shared.live === live) {
    const since = shared.lastSeen.get(room);
    const request = create(JoinRoomRequestSchema, { room, sinceSequence: since });
    let retry: boolean;
    try {
      await shared.request({ case: "joinRoom", value: request }, (result) => onRejoinReply(shared, live, room, result));
      return;
    } catch (error) {
      // The session is gone: the next one rejoins.
      if (shared.live !== live) return;
      const code = error instanceof ChatError ? error.code : "INTERNAL";
      if (code === "TIMEOUT") {
        // No reply came, so nothing was reported yet.
        shared.events.emit({ type: "rejoined", room, ok: false, error: error as ChatError });
      }
      retry = code === "TIMEOUT" || retryable(code);
    }
    if (!retry) return;
    await shared.sleep(delayMs);
    delayMs = Math.min(delayMs * 2, 2_000);
  }
}

/**
 * A rejoin's reply, as it arrives: records where the next rejoin resumes
 * (or gives the room up if the server will never accept it) and reports
 * the outcome.
 */
function onRejoinReply(shared: Shared, live: Live, room: string, result: ReplyResult): void {
  if (result.case === "joinRoom") {
    // What the client has from here on: the backlog (each message raises
    // it as it arrives), then live messages. After a reset (the room's
    // numbering went back on the server) the old point means nothing.
    if (result.value.sequenceReset) shared.lastSeen.set(room, result.value.backlogAfterSequence);
    else shared.raiseLastSeen(room, result.value.backlogAfterSequence);
    live.rejoined.add(room);
    shared.events.emit({ type: "rejoined", room, ok: true, result: result.value });
    return;
  }
  const error =
    result.case === "error"
      ? ChatError.fromFrame(result.value)
      : new ChatError("UNEXPECTED_REPLY", "the server answered a join with another kind of reply");
  // A rejoin asked again after a late reply, which was reported when it
  // came: the room is joined.
  if (error.code === "ALREADY_A_MEMBER" && live.rejoined.has(room)) return;
  if (error.code !== "ALREADY_A_MEMBER" && !retryable(error.code)) {
    // The server will never accept this room (e.g. an invalid name or no
    // permission): stop trying. Other failures are retried.
    shared.forget(room);
  }
  shared.events.emit({ type: "rejoined", room, ok: false, error });
}

/** Whether a refused join may succeed if tried again later. */
export function retryable(code: ChatErrorCode): boolean {
  return code === "UNAVAILABLE" || code === "RATE_LIMITED" || code === "INTERNAL";
}
