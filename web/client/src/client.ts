// The public client: `connect(options)` starts the connection loop in the
// background and returns a `ChatClient`, whose requests (join, leave,
// send, members, rooms, history, ping) go out on the current session and
// wait for their replies, and whose events arrive through `on()` handlers
// or async iterators.

import { create } from "@bufbuild/protobuf";
import { ChatError } from "./errors.js";
import type { ChatEvent, EventOf } from "./events.js";
import {
  DeleteMessageRequestSchema,
  EditMessageRequestSchema,
  HistoryDirection,
  HistoryRequestSchema,
  JoinRoomRequestSchema,
  LeaveRoomRequestSchema,
  MarkReadRequestSchema,
  ListDirectRequestSchema,
  OpenDirectRequestSchema,
  ReactRequestSchema,
  ListMembersRequestSchema,
  ListRoomsRequestSchema,
  PingRequestSchema,
  SendMessageRequestSchema,
  TypingRequestSchema,
  type HistoryResponse,
  type JoinRoomResult,
  type LeaveRoomResult,
  type ListMembersResult,
  type DirectConversation,
  type MarkReadResult,
  type Member,
  type PongResult,
  type SendMessageResult,
  type Welcome,
} from "./gen/chat/v1/chat_pb.js";
import { randomUuid } from "./ids.js";
import { run } from "./connection.js";
import { settings, type ConnectOptions } from "./options.js";
import { Shared, type ConnectionState, type Success } from "./shared.js";

/** The first pause before a send refused as UNAVAILABLE goes again (it doubles). */
const UNAVAILABLE_PAUSE_MS = 100;
/** The first pause before a send refused for a room not yet rejoined goes again (it doubles). */
const NOT_A_MEMBER_PAUSE_MS = 20;
/** The longest of those pauses. */
const PAUSE_MAX_MS = 2_000;
/** The most pages `members` reads (of 1000 members each). */
const MAX_MEMBER_PAGES = 100;

/** Which page `history` reads, relative to `from`. */
export interface HistoryOptions {
  /** "backward": messages before `from` (0: the latest ones); "forward": messages after `from`. Default "backward". */
  direction?: "backward" | "forward" | HistoryDirection;
  /** The exclusive starting sequence (default 0). */
  from?: bigint | number;
  /** At most this many messages (0, the default: the server's default of 50; the server caps it at 500). */
  limit?: number;
}

/** Options of one send. */
export interface SendOptions {
  /** The client message id (default: a fresh random UUID); a retry with the same id is stored once. */
  clientMessageId?: string;
}

/** Starts a client: connects in the background and returns at once (see `waitConnected`). */
export function connect(options: ConnectOptions): ChatClient {
  return new ChatClient(options);
}

/** A connection to a chat server that survives reconnects. */
export class ChatClient implements AsyncIterable<ChatEvent> {
  /** The state shared with the connection loop. */
  private readonly shared: Shared;
  /** Settles when the connection loop has ended. */
  private readonly loop: Promise<void>;

  constructor(options: ConnectOptions) {
    this.shared = new Shared(settings(options));
    this.loop = run(this.shared);
    if (this.shared.settings.joinDirect) {
      this.on("directOpened", ({ conversation }) => {
        // ALREADY_A_MEMBER: `openDirect` (or an earlier event) joined it first.
        if (!this.shared.rooms.has(conversation.room)) this.join(conversation.room).catch(() => {});
      });
    }
  }

  /** Where the connection stands. */
  get state(): ConnectionState {
    return this.shared.state;
  }

  /** The current session's Welcome (undefined between sessions). */
  get welcome(): Welcome | undefined {
    return this.shared.live?.welcome;
  }

  /** Waits until a session is open; returns its Welcome. Fails with TIMEOUT, CLOSED or STOPPED. */
  waitConnected(timeoutMs = this.shared.settings.connectTimeoutMs): Promise<Welcome> {
    return this.shared.waitConnected(timeoutMs);
  }

  /** Calls `handler` for each event of `type` ("*": every event); returns a function that removes it. */
  on<T extends ChatEvent["type"] | "*">(
    type: T,
    handler: (event: T extends ChatEvent["type"] ? EventOf<T> : ChatEvent) => void,
  ): () => void {
    return this.shared.events.on(type, handler);
  }

  /** The events from now on, in order; the iteration ends when the client is closed or stopped. */
  events(): AsyncIterableIterator<ChatEvent> {
    return this.shared.events.iterate();
  }

  /** `for await (const event of client)`: the same as `events()`. */
  [Symbol.asyncIterator](): AsyncIterator<ChatEvent> {
    return this.events();
  }

  /** The rooms this client is in (and rejoins after a reconnect), as it keeps them. */
  joinedRooms(): string[] {
    return [...this.shared.rooms];
  }

  /** The last sequence seen in `room`: where a rejoin resumes from. */
  lastSeen(room: string): bigint | undefined {
    return this.shared.lastSeen.get(room);
  }

  /** Drops the current session and connects again at once (rejoining and resuming as after any reconnect). */
  reconnect(): void {
    this.shared.socket?.end("reconnect requested");
  }

  /**
   * Ends the session and stops reconnecting: waiting requests fail with
   * DISCONNECTED, later ones with CLOSED, and the events end. Resolves once
   * the client has stopped.
   */
  close(): Promise<void> {
    this.shared.requestClose();
    return this.loop;
  }

  /** Joins `room` (it is rejoined after every reconnect until left). */
  async join(room: string): Promise<JoinRoomResult> {
    // A room the client is in already (its rejoin may still be on the way)
    // is joined from its point, so nothing missed is skipped.
    const since = this.shared.rooms.has(room) ? this.shared.lastSeen.get(room) : undefined;
    const request = create(JoinRoomRequestSchema, { room, sinceSequence: since });
    const result = await this.shared.request({ case: "joinRoom", value: request }, (reply) => {
      // In stream order: the live messages after the reply raise it further.
      // Joined afresh, set, not raised: a point kept from before a leave may
      // be above where the room's numbering stands now. Joined from its
      // point, the backlog follows.
      if (reply.case !== "joinRoom") return;
      this.shared.rooms.add(room);
      if (since === undefined) this.shared.lastSeen.set(room, reply.value.latestSequence);
      else if (reply.value.sequenceReset) this.shared.lastSeen.set(room, reply.value.backlogAfterSequence);
      else this.shared.raiseLastSeen(room, reply.value.backlogAfterSequence);
    });
    return expect(result, "joinRoom");
  }

  /** Leaves `room`; it is no longer rejoined (unless it is unknown whether the leave happened). */
  async leave(room: string): Promise<LeaveRoomResult> {
    const request = create(LeaveRoomRequestSchema, { room });
    try {
      const result = await this.shared.request({ case: "leaveRoom", value: request });
      this.shared.forget(room);
      return expect(result, "leaveRoom");
    } catch (error) {
      const unknown = error instanceof ChatError && (error.code === "NOT_CONNECTED" || error.code === "TIMEOUT");
      if (!unknown) this.shared.forget(room);
      throw error;
    }
  }

  /**
   * Sends `text` to `room` under a client message id (fresh, or the
   * caller's). If there is no session, or it is lost before the
   * acknowledgement, the send waits for the next session and the room's
   * rejoin and goes out again with the same id, within the send retry
   * window; so does a send the server refused as UNAVAILABLE (after a
   * pause that doubles from 100 ms to 2 s). The server stores and
   * delivers it once.
   */
  async send(room: string, text: string, options: SendOptions = {}): Promise<SendMessageResult> {
    const clientMessageId = options.clientMessageId ?? randomUuid();
    const request = create(SendMessageRequestSchema, { room, clientMessageId, text });
    return this.numbered(room, { case: "sendMessage", value: request });
  }

  /**
   * Replaces the text of this user's message `sequence` in `room`. The
   * room's members (this client too) receive it as a `message` event of
   * kind EDIT with its own sequence number. Retried like a send, under one
   * fresh client message id. Refused with MESSAGE_NOT_FOUND (no such
   * message, or deleted) or NOT_THE_AUTHOR.
   */
  async edit(room: string, sequence: bigint | number, text: string): Promise<SendMessageResult> {
    const clientMessageId = randomUuid();
    const request = create(EditMessageRequestSchema, { room, sequence: BigInt(sequence), text, clientMessageId });
    return this.numbered(room, { case: "editMessage", value: request });
  }

  /**
   * Takes back message `sequence` of `room` (this user's, or anyone's with
   * an operator's token): its text is gone from the server. The members
   * receive a `message` event of kind DELETE. Retried like a send; refused
   * like `edit`.
   */
  async delete(room: string, sequence: bigint | number): Promise<SendMessageResult> {
    const clientMessageId = randomUuid();
    const request = create(DeleteMessageRequestSchema, { room, sequence: BigInt(sequence), clientMessageId });
    return this.numbered(room, { case: "deleteMessage", value: request });
  }

  /**
   * Adds (`add`, the default) or takes back this user's reaction `emoji`
   * to message `sequence` of `room`. Numbered like an edit: the members
   * receive a `message` event of kind REACTION_ADDED or REACTION_REMOVED.
   * Retried like a send; refused with MESSAGE_NOT_FOUND, INVALID_ARGUMENT
   * (the emoji: 1 to 32 bytes, no spaces) or TOO_MANY_REACTIONS.
   */
  async react(room: string, sequence: bigint | number, emoji: string, add = true): Promise<SendMessageResult> {
    const clientMessageId = randomUuid();
    const request = create(ReactRequestSchema, { room, sequence: BigInt(sequence), emoji, add, clientMessageId });
    return this.numbered(room, { case: "react", value: request });
  }

  /**
   * Asks `request` (a send, an edit, a delete or a reaction, one client message id
   * across attempts) until the server numbers it: through lost sessions, a
   * rejoin under way and UNAVAILABLE, within the send retry window.
   */
  private async numbered(room: string, request: Numbered): Promise<SendMessageResult> {
    const deadline = Date.now() + this.shared.settings.sendRetryWindowMs;
    let retrying = false;
    let unavailablePauseMs = UNAVAILABLE_PAUSE_MS;
    let notMemberPauseMs = NOT_A_MEMBER_PAUSE_MS;
    for (;;) {
      if (retrying) await this.rejoined(room, deadline);
      try {
        return expect(await this.shared.request(request), request.case);
      } catch (error) {
        if (!(error instanceof ChatError)) throw error;
        const leftMs = deadline - Date.now();
        if (error.code === "NOT_CONNECTED" || error.code === "DISCONNECTED" || error.code === "TIMEOUT") {
          if (leftMs <= 0) throw error;
          await this.shared.waitConnected(leftMs).catch(() => {
            throw error;
          });
          retrying = true;
        } else if (error.code === "NOT_A_MEMBER" && retrying && this.shared.rooms.has(room) && leftMs > 0) {
          // The room's rejoin has not taken effect yet (the loop waits for
          // a rejoin in progress first); ask again, less and less often.
          await this.shared.sleep(Math.min(notMemberPauseMs, leftMs));
          notMemberPauseMs = Math.min(notMemberPauseMs * 2, PAUSE_MAX_MS);
        } else if (error.code === "UNAVAILABLE" && leftMs > 0) {
          // The server could not take it now; it may have stored it before
          // failing, so only the same id may go again.
          await this.shared.sleep(Math.min(unavailablePauseMs, leftMs));
          unavailablePauseMs = Math.min(unavailablePauseMs * 2, PAUSE_MAX_MS);
        } else {
          throw error;
        }
      }
    }
  }

  /** Waits (until `deadline` at most) for `room`'s rejoin on the current session to finish. */
  private async rejoined(room: string, deadline: number): Promise<void> {
    const rejoining = this.shared.live?.rejoining.get(room);
    if (rejoining !== undefined) await Promise.race([rejoining, this.shared.sleep(Math.max(deadline - Date.now(), 0))]);
  }

  /**
   * The members of `room` (the client must be in it), each user once, sorted
   * by display name: all of them, page after page (at most 100 pages of 1000).
   */
  async members(room: string): Promise<Member[]> {
    const members: Member[] = [];
    let after = "";
    for (let page = 0; page < MAX_MEMBER_PAGES; page++) {
      const result = await this.membersPage(room, after, 1000);
      members.push(...result.members);
      if (result.nextPage === "") break;
      after = result.nextPage;
    }
    return members;
  }

  /**
   * One page of `room`'s members: after `pageAfter` (empty: from the first;
   * else a previous page's `nextPage`), at most `limit` (0: the server's
   * default, 100; at most 1000), with the room's member count.
   */
  async membersPage(room: string, pageAfter = "", limit = 0): Promise<ListMembersResult> {
    const request = create(ListMembersRequestSchema, { room, pageAfter, limit });
    return expect(await this.shared.request({ case: "listMembers", value: request }), "listMembers");
  }

  /**
   * Tells `room`'s other members that this user is typing there (`true`;
   * repeat it every few seconds while typing) or stopped (`false`).
   * Ephemeral: not stored, not resumed, rate limited per connection
   * (RATE_LIMITED); NOT_A_MEMBER for a room this connection is not in.
   */
  async typing(room: string, typing: boolean): Promise<void> {
    const request = create(TypingRequestSchema, { room, typing });
    expect(await this.shared.request({ case: "typing", value: request }), "typing");
  }

  /**
   * Opens (or finds) this user's direct conversation with the user
   * `userId` — a room only the two may join, read and write to — and
   * joins it (rejoined like any room). Both users' other sessions get a
   * `directOpened` event (and join it, unless `joinDirect` is false).
   */
  async openDirect(userId: string): Promise<DirectConversation> {
    const request = create(OpenDirectRequestSchema, { userId });
    const conversation = expect(await this.shared.request({ case: "openDirect", value: request }), "openDirect");
    try {
      await this.join(conversation.room);
    } catch (error) {
      if (!(error instanceof ChatError) || error.code !== "ALREADY_A_MEMBER") throw error;
    }
    return conversation;
  }

  /** This user's direct conversations, the most recently opened first (at most 500). */
  async listDirect(): Promise<DirectConversation[]> {
    const request = create(ListDirectRequestSchema, {});
    return expect(await this.shared.request({ case: "listDirect", value: request }), "listDirect").conversations;
  }

  /**
   * Marks `room` read up to `sequence` for this user (all of its
   * sessions): stored, never moved back, clamped to the room's latest, and
   * announced to the room's members (coalesced). Resolves with the read
   * position and the unread count after it. Rate limited per connection
   * (RATE_LIMITED); NOT_A_MEMBER for a room this connection is not in.
   */
  async markRead(room: string, sequence: bigint | number): Promise<MarkReadResult> {
    const request = create(MarkReadRequestSchema, { room, sequence: BigInt(sequence) });
    return expect(await this.shared.request({ case: "markRead", value: request }), "markRead");
  }

  /** The rooms this connection is in, as the server sees it, sorted. */
  async rooms(): Promise<string[]> {
    const request = create(ListRoomsRequestSchema, {});
    return expect(await this.shared.request({ case: "listRooms", value: request }), "listRooms").rooms;
  }

  /**
   * A page of `room`'s stored history, oldest first: messages before
   * sequence `from` (backward; 0: the latest) or after it (forward). Needs
   * read permission on the room, not membership.
   */
  async history(room: string, options: HistoryOptions = {}): Promise<HistoryResponse> {
    const direction =
      options.direction === "forward"
        ? HistoryDirection.FORWARD
        : options.direction === "backward" || options.direction === undefined
          ? HistoryDirection.BACKWARD
          : options.direction;
    const request = create(HistoryRequestSchema, {
      room,
      direction,
      fromSequence: BigInt(options.from ?? 0),
      limit: options.limit ?? 0,
    });
    return expect(await this.shared.request({ case: "history", value: request }), "history");
  }

  /** A round trip to the server. */
  async ping(): Promise<PongResult> {
    const request = create(PingRequestSchema, { clientTimeUnixMs: BigInt(Date.now()) });
    return expect(await this.shared.request({ case: "ping", value: request }), "pong");
  }
}

/** The value carried by a successful result of kind `K`. */
type ValueOf<K extends Success["case"]> = Extract<Success, { case: K }> extends { value: infer V } ? V : never;

/** The value of `result` if it is of kind `kind`; UNEXPECTED_REPLY otherwise. */
/** A request the server numbers: a send, an edit or a delete. */
type Numbered = Extract<
  Parameters<Shared["request"]>[0],
  { case: "sendMessage" | "editMessage" | "deleteMessage" | "react" }
>;

function expect<K extends Success["case"]>(result: Success, kind: K): ValueOf<K> {
  if (result.case !== kind) {
    throw new ChatError("UNEXPECTED_REPLY", `the server answered with ${result.case}, not ${kind}`);
  }
  return result.value as ValueOf<K>;
}
