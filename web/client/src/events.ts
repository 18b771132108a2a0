// What a client observes, in the order it happened: the server's events
// (messages, members joining and leaving, notifications) and the client's
// own connection changes; and `EventHub`, which hands them to `on()`
// handlers and to async iterators.

import type { ChatError } from "./errors.js";
import type {
  DisconnectNotice,
  JoinRoomResult,
  Member,
  MessageEvent,
  Notification,
  ReadPosition,
  DirectConversation,
  Welcome,
} from "./gen/chat/v1/chat_pb.js";

/** A session is open (the first time, or again after a reconnect); rooms are rejoined right after. */
export interface ConnectedEvent {
  type: "connected";
  /** The server's Welcome: who it took the client to be, its limits, its idle timeout. */
  welcome: Welcome;
}

/**
 * A room the client was in was joined again on a new session, from the
 * last sequence seen there; on success the missed messages (the backlog)
 * follow as `message` events, in order, before live ones. A rejoin with no
 * reply in time is reported as a TIMEOUT failure and asked again; if its
 * late reply says it happened, that follows as `ok: true` (the repeated
 * ask's ALREADY_A_MEMBER is not reported).
 */
export type RejoinedEvent =
  | { type: "rejoined"; room: string; ok: true; result: JoinRoomResult }
  | { type: "rejoined"; room: string; ok: false; error: ChatError };

/** A numbered event in one of the client's rooms (its own included): a message, or an edit or delete of one (`kind`, `targetSequence`). */
export interface MessageReceivedEvent {
  type: "message";
  /** The message, with its room, per-room sequence, sender and client message id. */
  message: MessageEvent;
}

/**
 * Members of one of the client's rooms changed: who joined and who left
 * since the room's previous such event (the server coalesces a room's
 * changes: at the next 100 ms tick when the room was quiet, then at most one a second). Apply them as set
 * operations: a user listed that the room's list already has (or lacks)
 * changes nothing. Once changes stop, the join's list plus these events
 * equal the room's members.
 */
export interface MembersChangedEvent {
  type: "membersChanged";
  /** The room. */
  room: string;
  /** Users who are members now, by display name. */
  joined: Member[];
  /** Users who are not members any more, by display name. */
  left: Member[];
  /** How many members the room has now. */
  memberCount: number;
}

/** Someone joined one of the client's rooms (from a server older than `membersChanged`). */
export interface MemberJoinedEvent {
  type: "memberJoined";
  /** The room. */
  room: string;
  /** Who joined. */
  member: Member;
}

/** Someone left one of the client's rooms (from a server older than `membersChanged`). */
export interface MemberLeftEvent {
  type: "memberLeft";
  /** The room. */
  room: string;
  /** Who left. */
  member: Member;
}

/**
 * Who else is typing in one of the client's rooms now: the room's whole
 * typing state, replacing the previous event's. Ephemeral: show `typists`
 * until the next event for the room, a typist's message arrives, or
 * `expiresAfterMs` pass. This user is never listed or counted. Sent at once
 * when the room was quiet, then at most about once a second.
 */
export interface TypingEvent {
  type: "typing";
  /** The room. */
  room: string;
  /** The first few typists (at most 5), the longest typing first; empty: nobody. */
  typists: Member[];
  /** How many are typing: `typists` and the ones not listed. */
  count: number;
  /** Forget this state after this long unless another event for the room comes. */
  expiresAfterMs: number;
}

/**
 * An application removed this user from one of the client's rooms (server
 * API): the client is no longer in it and does not rejoin it.
 */
export interface RemovedEvent {
  type: "removed";
  /** The room. */
  room: string;
  /** Why, as the application put it (show it). */
  reason: string;
}

/**
 * Members of one of the client's rooms (this user too, from another
 * session) have read it up to these sequences. Coalesced: about one event
 * a second per room.
 */
export interface ReadReceiptsEvent {
  type: "readReceipts";
  /** The room. */
  room: string;
  /** Who read up to where. */
  positions: ReadPosition[];
}

/** A direct conversation of this user was opened (by either user, from any session); joined unless `joinDirect` is false. */
export interface DirectOpenedEvent {
  type: "directOpened";
  /** The conversation: its room and the other user. */
  conversation: DirectConversation;
}

/** A server notification (periodic, or an operator's broadcast). */
export interface NotificationEvent {
  type: "notification";
  /** The notification. */
  notification: Notification;
}

/** The session ended. */
export interface DisconnectedEvent {
  type: "disconnected";
  /** The server's notice, if it sent one before closing. */
  notice: DisconnectNotice | undefined;
  /** What ended it, in words. */
  reason: string;
}

/** A connection attempt failed or a session ended; the next attempt follows after `delayMs`. */
export interface ReconnectingEvent {
  type: "reconnecting";
  /** Attempt number since the last session that opened, from 1. */
  attempt: number;
  /** The wait before the attempt, in milliseconds. */
  delayMs: number;
  /** Why the previous attempt or session ended. */
  reason: string;
}

/**
 * The client stopped for good: the server refused its credentials (close
 * code 4401) for a reason the same credentials keep, and it has no way to
 * get others (a fixed token, or a name); or a notice said to stay
 * disconnected (an application ended the session). The last event.
 */
export interface StoppedEvent {
  type: "stopped";
  /** The server's refusal, or its notice's message, in words. */
  reason: string;
  /**
   * The refusal's reason as the server gave it (`expired`, `signature`,
   * `name`, …), or `disconnected` when a notice said to stay disconnected
   * (an application ended the session for good).
   */
  closeReason: string;
}

/** One thing that happened. */
export type ChatEvent =
  | ConnectedEvent
  | RejoinedEvent
  | MessageReceivedEvent
  | MembersChangedEvent
  | MemberJoinedEvent
  | MemberLeftEvent
  | TypingEvent
  | RemovedEvent
  | ReadReceiptsEvent
  | DirectOpenedEvent
  | NotificationEvent
  | DisconnectedEvent
  | ReconnectingEvent
  | StoppedEvent;

/** The event of type `T`. */
export type EventOf<T extends ChatEvent["type"]> = Extract<ChatEvent, { type: T }>;

/** A consumer of events: an iterator's queue and its waiting `next()`. */
interface Subscriber {
  /** Events not yet taken. */
  queue: ChatEvent[];
  /** The `next()` waiting for an event, if any. */
  wake: ((result: IteratorResult<ChatEvent>) => void) | undefined;
  /** Whether the subscriber stopped listening or the hub ended. */
  done: boolean;
}

/** Hands every event to the handlers and iterators that listen, in order. */
export class EventHub {
  /** `on()` handlers, by event type ("*": all). */
  private readonly handlers = new Map<string, Set<(event: ChatEvent) => void>>();
  /** Open iterators. */
  private readonly subscribers = new Set<Subscriber>();
  /** Set once the client has stopped: no more events. */
  private ended = false;
  /** Reports a handler that threw. */
  private readonly onHandlerError: (error: unknown) => void;

  constructor(onHandlerError: (error: unknown) => void) {
    this.onHandlerError = onHandlerError;
  }

  /** Calls `handler` for each event of `type` ("*": every event); returns a function that stops it. */
  on<T extends ChatEvent["type"] | "*">(
    type: T,
    handler: (event: T extends ChatEvent["type"] ? EventOf<T> : ChatEvent) => void,
  ): () => void {
    let set = this.handlers.get(type);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(type, set);
    }
    const h = handler as (event: ChatEvent) => void;
    set.add(h);
    return () => set.delete(h);
  }

  /** Events from now on, until the client is closed or stopped. */
  iterate(): AsyncIterableIterator<ChatEvent> {
    const sub: Subscriber = { queue: [], wake: undefined, done: this.ended };
    if (!sub.done) this.subscribers.add(sub);
    const stop = (): IteratorResult<ChatEvent> => {
      sub.done = true;
      sub.queue.length = 0;
      this.subscribers.delete(sub);
      return { value: undefined, done: true };
    };
    return {
      next: () => {
        const event = sub.queue.shift();
        if (event !== undefined) return Promise.resolve({ value: event, done: false });
        if (sub.done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (sub.wake = resolve));
      },
      return: () => Promise.resolve(stop()),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  /** Delivers `event` to every handler and iterator. */
  emit(event: ChatEvent): void {
    if (this.ended) return;
    for (const type of [event.type, "*"]) {
      for (const handler of this.handlers.get(type) ?? []) {
        try {
          handler(event);
        } catch (error) {
          this.onHandlerError(error);
        }
      }
    }
    for (const sub of this.subscribers) {
      if (sub.wake !== undefined) {
        const wake = sub.wake;
        sub.wake = undefined;
        wake({ value: event, done: false });
      } else {
        sub.queue.push(event);
      }
    }
  }

  /** No more events: iterators end once they have taken what is queued. */
  end(): void {
    this.ended = true;
    for (const sub of this.subscribers) {
      sub.done = true;
      if (sub.wake !== undefined) {
        const wake = sub.wake;
        sub.wake = undefined;
        wake({ value: undefined, done: true });
      }
    }
    this.subscribers.clear();
  }
}
