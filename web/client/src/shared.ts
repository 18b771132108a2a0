// The state a client's handle and its connection loop share: settings,
// the current session, the rooms and the last sequence seen in each, the
// requests waiting for their replies (matched by request id), and the
// connection state that `waitConnected` watches.

import { create } from "@bufbuild/protobuf";
import { ChatError, type ClientErrorCode } from "./errors.js";
import { EventHub } from "./events.js";
import { ClientFrameSchema, type ClientFrame, type Reply, type Welcome } from "./gen/chat/v1/chat_pb.js";
import type { Settings } from "./options.js";
import type { Socket } from "./socket.js";

/** Most late replies (`Shared.late`) kept on one session. */
const MAX_LATE = 4096;

/** A request: one case of the `ClientFrame.request` oneof. */
export type Request = ClientFrame["request"];
/** A reply's result: one case of the `Reply.result` oneof. */
export type ReplyResult = Reply["result"];
/** A successful result (not an error, not empty). */
export type Success = Exclude<ReplyResult, { case: "error" } | { case: undefined }>;

/** Where the client's connection stands. */
export type ConnectionState =
  /** Connecting, or waiting to reconnect. */
  | "connecting"
  /** A session is open. */
  | "connected"
  /** Closed by `close()` (or the session ended with `reconnect: false`). */
  | "closed"
  /** Stopped for good: the server refused the credentials. */
  | "stopped";

/** A request waiting for its reply. */
interface Pending {
  /** Hands the successful result to the caller. */
  resolve: (result: Success) => void;
  /** Fails the caller. */
  reject: (error: ChatError) => void;
  /** Fails the request with TIMEOUT. */
  timer: ReturnType<typeof setTimeout>;
  /** Called when the reply arrives, in stream order: before any later frame is handled. */
  onReply: ((result: ReplyResult) => void) | undefined;
}

/** The open session requests go out on. */
export interface Live {
  /** The session's WebSocket. */
  socket: Socket;
  /** The server's Welcome for it. */
  welcome: Welcome;
  /**
   * Rooms whose rejoin on this session has not finished yet, each with a
   * promise settled when it has (a send retried after a reconnect waits for
   * its room).
   */
  rejoining: Map<string, Promise<void>>;
  /** Rooms whose rejoin was reported as done on this session: a repeat's ALREADY_A_MEMBER is not reported again. */
  rejoined: Set<string>;
}

/** What the client handle and the connection loop share. */
export class Shared {
  /** The client's settings. */
  readonly settings: Settings;
  /** Where events go. */
  readonly events: EventHub;
  /** The rooms the client is in, rejoined on every session. */
  readonly rooms: Set<string>;
  /** The last sequence seen per room: where a rejoin resumes. Messages and rejoins only raise it; a fresh join or a reset sets it. */
  readonly lastSeen = new Map<string, bigint>();
  /** The open session; undefined between sessions. */
  live: Live | undefined;
  /** The session being opened or open, so that `close()` and `reconnect()` can end it. */
  socket: Socket | undefined;
  /** Where the connection stands. */
  private current: ConnectionState = "connecting";
  /** Woken on every state change. */
  private readonly watchers = new Set<() => void>();
  /** Requests waiting for replies, by request id. */
  private readonly pending = new Map<number, Pending>();
  /**
   * The `onReply` of requests that timed out on the current session: a
   * late reply still reaches it (a join's sets the room's resume point).
   * Cleared when the session ends.
   */
  private readonly late = new Map<number, (result: ReplyResult) => void>();
  /** The next request id (heartbeat pings take ids too). */
  private nextRequest = 1;
  /** Resolves when `close()` is called: cuts waits short. */
  readonly closing: Promise<void>;
  /** Whether `close()` was called. */
  closeRequested = false;
  /** Resolves `closing`. */
  private signalClose!: () => void;

  constructor(settings: Settings) {
    this.settings = settings;
    this.events = new EventHub(settings.onHandlerError);
    this.rooms = new Set([...settings.rooms, ...settings.resumeFrom.map(([room]) => room)]);
    for (const [room, sequence] of settings.resumeFrom) this.lastSeen.set(room, sequence);
    this.closing = new Promise((resolve) => (this.signalClose = resolve));
  }

  /** Where the connection stands. */
  get state(): ConnectionState {
    return this.current;
  }

  /** Moves to `state` and wakes the watchers. */
  setState(state: ConnectionState): void {
    this.current = state;
    for (const wake of [...this.watchers]) wake();
  }

  /** Asks the connection loop to end the session and stop. */
  requestClose(): void {
    this.closeRequested = true;
    this.signalClose();
    this.socket?.end("closed by the client");
  }

  /** Forgets `room`: it is not rejoined, and its resume point is gone (a later fresh join starts where the room stands then). */
  forget(room: string): void {
    this.rooms.delete(room);
    this.lastSeen.delete(room);
  }

  /** Raises `room`'s last seen sequence to `sequence` (never lowers it). */
  raiseLastSeen(room: string, sequence: bigint): void {
    const seen = this.lastSeen.get(room);
    if (seen === undefined || sequence > seen) this.lastSeen.set(room, sequence);
  }

  /** A fresh request id. */
  takeRequestId(): number {
    return this.nextRequest++;
  }

  /**
   * Sends `request` on the open session and waits for its reply. Fails at
   * once with NOT_CONNECTED between sessions (CLOSED, STOPPED once the
   * client has ended), with DISCONNECTED if the session ends first, with
   * TIMEOUT after the request timeout, and with the server's code if it
   * refuses. `onReply` sees the raw result in stream order.
   */
  request(request: Request, onReply?: (result: ReplyResult) => void): Promise<Success> {
    const refused = this.refusal();
    if (refused !== undefined) return Promise.reject(refused);
    const live = this.live!;
    const id = this.takeRequestId();
    const frame = create(ClientFrameSchema, { requestId: BigInt(id), request });
    const timeoutMs = this.settings.requestTimeoutMs;
    return new Promise<Success>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        if (onReply !== undefined) {
          // Bounded against a server that never answers: past the bound the
          // oldest late reply is no longer recorded.
          if (this.late.size >= MAX_LATE) this.late.delete(this.late.keys().next().value!);
          this.late.set(id, onReply);
        }
        reject(new ChatError("TIMEOUT", `no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, onReply });
      if (!live.socket.send(frame)) this.fail(id, "DISCONNECTED", "the connection was lost before the request went out");
    });
  }

  /** Why a request cannot go out now, if it cannot. */
  private refusal(): ChatError | undefined {
    if (this.current === "stopped") return new ChatError("STOPPED", "the client stopped for good (credentials refused, or the session ended by the server)");
    if (this.current === "closed" || this.closeRequested) return new ChatError("CLOSED", "the client is closed");
    if (this.live === undefined) return new ChatError("NOT_CONNECTED", "not connected to the server");
    return undefined;
  }

  /** Hands a reply to the request waiting for it (none for heartbeat pings), or a late one to its `onReply`. */
  settle(requestId: number, result: ReplyResult): void {
    const pending = this.pending.get(requestId);
    if (pending === undefined) {
      const late = this.late.get(requestId);
      this.late.delete(requestId);
      late?.(result);
      return;
    }
    this.pending.delete(requestId);
    clearTimeout(pending.timer);
    pending.onReply?.(result);
    if (result.case === "error") {
      pending.reject(ChatError.fromFrame(result.value));
    } else if (result.case === undefined) {
      pending.reject(new ChatError("UNEXPECTED_REPLY", "the server sent a reply without a result"));
    } else {
      pending.resolve(result);
    }
  }

  /** Fails request `id` with `code`. */
  private fail(id: number, code: ClientErrorCode, message: string): void {
    const pending = this.pending.get(id);
    if (pending === undefined) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    pending.reject(new ChatError(code, message));
  }

  /** Fails every waiting request with `code`: their session is gone. */
  failPending(code: ClientErrorCode, message: string): void {
    this.late.clear();
    for (const id of [...this.pending.keys()]) this.fail(id, code, message);
  }

  /**
   * Waits until a session is open and returns its Welcome; fails with
   * TIMEOUT after `timeoutMs`, with CLOSED or STOPPED once the client has
   * ended.
   */
  waitConnected(timeoutMs: number): Promise<Welcome> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        if (this.live !== undefined && this.current === "connected") {
          resolve(this.live.welcome);
        } else if (this.current === "stopped" || this.current === "closed") {
          reject(this.refusal());
        } else {
          return false;
        }
        return true;
      };
      if (check()) return;
      const timer = setTimeout(() => {
        this.watchers.delete(watch);
        reject(new ChatError("TIMEOUT", `not connected within ${timeoutMs} ms`));
      }, timeoutMs);
      const watch = (): void => {
        if (!check()) return;
        clearTimeout(timer);
        this.watchers.delete(watch);
      };
      this.watchers.add(watch);
    });
  }

  /** Waits `ms`, or less if the client is closed meanwhile. */
  sleep(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const slept = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
    return Promise.race([slept, this.closing]).finally(() => clearTimeout(timer));
  }
}
