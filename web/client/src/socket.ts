// One WebSocket session, from the handshake to its end: the credentials
// offered as subprotocols (`chat.v1` plus `bearer.<JWT>` or
// `name.<base64url>`), the Welcome that must come first, binary frames
// both ways, and how it ended (the server's DisconnectNotice, the close
// code and reason, or the client's own decision).

import { fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  ClientFrameSchema,
  ServerFrameSchema,
  type ClientFrame,
  type DisconnectNotice,
  type ServerFrame,
  type Welcome,
} from "./gen/chat/v1/chat_pb.js";
import type { WebSocketConstructor, WebSocketLike } from "./options.js";

/** The subprotocol every session offers and the server selects. */
export const PROTOCOL = "chat.v1";

/** Close code: the server refused the credentials (reason: why). */
export const CLOSE_UNAUTHORIZED = 4401;
/** Close code: a connection limit refused the session (reason: which). */
export const CLOSE_LIMITED = 4429;

/** How a session ended. */
export interface SessionEnd {
  /** What ended it, in words. */
  reason: string;
  /** The server's notice, if it sent one before closing. */
  notice: DisconnectNotice | undefined;
  /** Whether the session reached its Welcome (resets the backoff). */
  established: boolean;
  /** The close frame's code, when the server closed it (0 otherwise). */
  closeCode: number;
  /** The close frame's reason, when the server closed it. */
  closeReason: string;
}

/** The subprotocols that carry `token` (when given) or else `name`. */
export function subprotocols(token: string | undefined, name: string | undefined): string[] {
  if (token !== undefined) return [PROTOCOL, `bearer.${token.trim()}`];
  return [PROTOCOL, `name.${base64url(new TextEncoder().encode(name ?? ""))}`];
}

/** `bytes` in base64url without padding. */
export function base64url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** What a `Socket` tells its owner. */
export interface SocketHandlers {
  /** Every frame after the Welcome, in order. */
  onFrame(frame: ServerFrame): void;
}

/** Does nothing: stands in for handlers of a socket this session no longer listens to. */
const ignore = (): void => {};

/** One WebSocket session. */
export class Socket {
  /** Resolves with the server's Welcome, or with the end of a session that never got one. */
  readonly welcome: Promise<Welcome | SessionEnd>;
  /** Resolves once, when the session ends for any reason. */
  readonly ended: Promise<SessionEnd>;
  /** When a frame last arrived (ms, `Date.now()`), for the heartbeat. */
  lastHeard = Date.now();
  /** The WebSocket, until the session ends. */
  private ws: WebSocketLike | undefined;
  /** Whether the session has ended (it ends once). */
  private done = false;
  /** Whether the WebSocket's handshake completed. */
  private opened = false;
  /** The Welcome, once it came. */
  private welcomed: Welcome | undefined;
  /** The server's DisconnectNotice, once it came. */
  private notice: DisconnectNotice | undefined;
  /** The last error the WebSocket reported (a failed handshake says why here). */
  private lastError = "";
  /** Bounds the handshake and the wait for the Welcome. */
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  /** Resolves `welcome`. */
  private settleWelcome!: (value: Welcome | SessionEnd) => void;
  /** Resolves `ended`. */
  private settleEnded!: (end: SessionEnd) => void;

  constructor(
    WebSocket: WebSocketConstructor,
    url: string,
    protocols: string[],
    connectTimeoutMs: number,
    private readonly handlers: SocketHandlers,
  ) {
    this.welcome = new Promise((resolve) => (this.settleWelcome = resolve));
    this.ended = new Promise((resolve) => (this.settleEnded = resolve));
    try {
      this.ws = new WebSocket(url, protocols);
    } catch (error) {
      this.finish(`cannot connect to ${url}: ${describe(error)}`, 0, "");
      return;
    }
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => (this.opened = true);
    this.ws.onerror = (event) => (this.lastError = describe((event as { error?: unknown }).error ?? event));
    this.ws.onclose = (event) => this.onClose(url, event.code, event.reason);
    this.ws.onmessage = (event) => this.onMessage(event.data);
    this.connectTimer = setTimeout(() => {
      const what = this.opened ? "no welcome" : `no connection to ${url}`;
      this.end(`${what} within the connect timeout (${connectTimeoutMs} ms)`, true);
    }, connectTimeoutMs);
  }

  /** Sends `frame`; false if the session cannot send any more. */
  send(frame: ClientFrame): boolean {
    if (this.ws === undefined || this.ws.readyState !== 1) return false;
    try {
      this.ws.send(toBinary(ClientFrameSchema, frame));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Ends the session from this side, for `reason`. `abrupt` drops the
   * connection without waiting for the server's close frame (it is
   * presumed dead), where the WebSocket can (`ws`'s `terminate`).
   */
  end(reason: string, abrupt = false): void {
    const ws = this.ws;
    this.finish(reason, 0, "");
    if (ws === undefined) return;
    const terminate = (ws as { terminate?: () => void }).terminate;
    try {
      if (abrupt && typeof terminate === "function") terminate.call(ws);
      else ws.close(1000, "");
    } catch {
      // Already closing or closed: nothing more to do.
    }
  }

  /** A message from the server: the Welcome first, then frames for the owner. */
  private onMessage(data: unknown): void {
    if (!(data instanceof ArrayBuffer)) {
      this.end("the server sent a text message (only binary messages are valid)");
      return;
    }
    let frame: ServerFrame;
    try {
      frame = fromBinary(ServerFrameSchema, new Uint8Array(data));
    } catch (error) {
      this.end(`the server sent a malformed frame: ${describe(error)}`);
      return;
    }
    this.lastHeard = Date.now();
    if (this.welcomed === undefined) {
      if (frame.frame.case !== "welcome") {
        this.end("the server did not start with a welcome");
        return;
      }
      clearTimeout(this.connectTimer);
      this.welcomed = frame.frame.value;
      this.settleWelcome(frame.frame.value);
      return;
    }
    if (frame.frame.case === "disconnect") this.notice = frame.frame.value;
    this.handlers.onFrame(frame);
  }

  /** The server (or the network) closed the connection. */
  private onClose(url: string, code: number, reason: string): void {
    let why: string;
    if (this.notice !== undefined) why = `server closed the session: ${this.notice.message}`;
    else if (code === CLOSE_UNAUTHORIZED) why = `credentials refused: ${reason || "no reason given"}`;
    else if (code === CLOSE_LIMITED) why = `connection limit reached: ${reason || "no reason given"}`;
    else if (!this.opened) why = `cannot connect to ${url}: ${this.lastError || `closed with code ${code}`}`;
    else if (this.welcomed === undefined) why = `the server closed the session at once (code ${code}${reason ? `: ${reason}` : ""})`;
    else if (code === 1000 || code === 1001) why = "server closed the session";
    else why = `connection lost (code ${code}${reason ? `: ${reason}` : ""})`;
    this.finish(why, code, reason);
  }

  /** Records the end once; later calls do nothing. */
  private finish(reason: string, closeCode: number, closeReason: string): void {
    if (this.done) return;
    this.done = true;
    if (this.ws !== undefined) {
      // Handlers stay set (as no-ops): `ws` throws on an unheard error event.
      this.ws.onopen = ignore;
      this.ws.onmessage = ignore;
      this.ws.onclose = ignore;
      this.ws.onerror = ignore;
      this.ws = undefined;
    }
    clearTimeout(this.connectTimer);
    const end: SessionEnd = {
      reason,
      notice: this.notice,
      established: this.welcomed !== undefined,
      closeCode,
      closeReason,
    };
    this.settleWelcome(end);
    this.settleEnded(end);
  }
}

/** An error or event in words. */
function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  if (typeof error === "object" && error !== null && "message" in error) return String(error.message);
  return String(error);
}
