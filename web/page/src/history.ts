// Reading a room's stored history through the client library's `history`
// request: the page above the oldest message held (the latest page when
// none is held yet), and the messages of a gap a resume left, page after
// page forwards. Whatever arrives is added to the room, which keeps each
// sequence once.

import { ChatError, type ChatClient, type proto } from "@chat/client";
import type { Gap, Room } from "./room.js";

/** Messages asked for per page. */
export const PAGE = 50;
/** The server's largest page. */
const MAX_PAGE = 500;

/** What a history read brought. */
export interface Loaded {
  /** The messages that were new to the room, oldest first. */
  added: proto.MessageEvent[];
  /** Why it failed (undefined: it did not). */
  error: string | undefined;
}

/**
 * Loads the page of `room` older than what it holds; marks the room opened
 * once a page came, and when nothing older exists.
 */
export async function loadOlder(client: ChatClient, room: Room): Promise<Loaded> {
  room.loading = true;
  try {
    const page = await client.history(room.name, { direction: "backward", from: room.oldest() ?? 0n, limit: PAGE });
    if (page.latestSequence > room.latest) room.latest = page.latestSequence;
    const added = page.messages.filter((message) => room.add(message, page.latestSequence));
    if (page.messages.length < PAGE) room.olderExist = false;
    room.opened = true;
    return { added, error: undefined };
  } catch (error) {
    return { added: [], error: describe(error) };
  } finally {
    room.loading = false;
  }
}

/** Loads the messages of `gap` in `room`, forwards, until it is filled or a read fails. */
export async function loadGap(client: ChatClient, room: Room, gap: Gap): Promise<Loaded> {
  const added: proto.MessageEvent[] = [];
  let from = gap.after;
  while (from < gap.upTo) {
    const limit = Number(gap.upTo - from < BigInt(MAX_PAGE) ? gap.upTo - from : BigInt(MAX_PAGE));
    try {
      const page = await client.history(room.name, { direction: "forward", from, limit });
      if (page.messages.length === 0) break;
      for (const message of page.messages) if (room.add(message, page.latestSequence)) added.push(message);
      const last = page.messages[page.messages.length - 1]!.sequence;
      if (last <= from) break;
      from = last;
    } catch (error) {
      return { added, error: describe(error) };
    }
  }
  // What the store no longer has cannot be loaded: the gap is closed either way.
  room.gaps = room.gaps.filter((g) => g !== gap);
  return { added, error: undefined };
}

/** A failed request in words ("rate limited: try again in 2 s" for RATE_LIMITED). */
export function describe(error: unknown): string {
  if (!(error instanceof ChatError)) return String(error);
  if (error.code === "RATE_LIMITED") return `too many requests; try again in ${Math.ceil(error.retryAfterMs / 1000)} s`;
  if (error.code === "NOT_CONNECTED") return "not connected; try again when the connection is back";
  return error.message;
}
