// How a client connects and behaves: the `ConnectOptions` a caller gives,
// the `WebSocket` shape the client needs (the browser's, or the `ws`
// package's on Node), and the settings with every default filled in.

import { Backoff } from "./backoff.js";
import { fixedToken, type TokenProvider } from "./token.js";

/**
 * An event handler property. Declared as a method's type so that both the
 * browser's handlers (taking DOM events) and `ws`'s (taking its own event
 * types) fit: TypeScript compares method parameters bivariantly.
 */
type Handler<E> = { handle(event: E): void }["handle"];

/** The parts of a WebSocket the client uses (the browser's API, which `ws` also offers). */
export interface WebSocketLike {
  /** Set to "arraybuffer" so binary messages arrive as ArrayBuffers. */
  binaryType: string;
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  /** The subprotocol the server selected. */
  readonly protocol: string;
  /** Queues a binary message. */
  send(data: Uint8Array): void;
  /** Starts the closing handshake. */
  close(code?: number, reason?: string): void;
  /** The connection is open. */
  onopen: Handler<never> | null;
  /** A message arrived (`data`: an ArrayBuffer for binary messages, a string for text). */
  onmessage: Handler<{ data: unknown }> | null;
  /** The connection closed, with the close frame's code and reason. */
  onclose: Handler<{ code: number; reason: string }> | null;
  /** The connection failed (a close event follows). */
  onerror: Handler<never> | null;
}

/** Makes a WebSocket for `url` offering `protocols`, like `new WebSocket(url, protocols)`. */
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

/** What `connect` takes. */
export interface ConnectOptions {
  /** The server's WebSocket endpoint: `ws://HOST:PORT/v1/ws` or `wss://…/v1/ws`. */
  url: string;
  /**
   * The bearer token for servers with authentication: a string (a fixed
   * token) or a provider asked before every connection attempt.
   */
  token?: string | TokenProvider;
  /** The display name for servers without authentication (ignored with a token). */
  name?: string;
  /** Rooms to join on every session, before any joined later. */
  rooms?: string[];
  /**
   * Rooms to join on every session like `rooms`, the first time resuming
   * after the given sequence: the points an earlier client had reached
   * (`lastSeen`), kept across a page reload, so the first session gets what
   * was missed.
   */
  resumeFrom?: ReadonlyArray<readonly [string, bigint]>;
  /** How long a request waits for its reply (default 10 s). */
  requestTimeoutMs?: number;
  /** How long a connection attempt may take, up to the server's Welcome (default 5 s). */
  connectTimeoutMs?: number;
  /** How often to ping at most (default 10 s; a third of the server's idle timeout if shorter). */
  heartbeatIntervalMs?: number;
  /** If nothing arrives from the server for this long, the session is replaced (default 30 s). */
  heartbeatTimeoutMs?: number;
  /** Delays between reconnect attempts (default 250 ms doubling to 10 s, with jitter). */
  backoff?: Backoff;
  /** Whether to reconnect after a session ends (default true). */
  reconnect?: boolean;
  /** How long a send keeps being retried, with its client message id, across lost connections (default 30 s). */
  sendRetryWindowMs?: number;
  /** Whether to join a direct conversation's room as soon as the server says it was opened (default true). */
  joinDirect?: boolean;
  /** The WebSocket implementation (default `globalThis.WebSocket`; on Node 20, the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  /** Called when an event handler throws (default: `console.error`). */
  onHandlerError?: (error: unknown) => void;
}

/** `ConnectOptions` with every default filled in. */
export interface Settings {
  /** The endpoint, checked to be ws:// or wss://. */
  readonly url: string;
  /** The token provider, if the server needs one. */
  readonly token: TokenProvider | undefined;
  /** The display name offered without a token. */
  readonly name: string | undefined;
  /** Rooms joined on every session. */
  readonly rooms: readonly string[];
  /** See `ConnectOptions.resumeFrom`. */
  readonly resumeFrom: ReadonlyArray<readonly [string, bigint]>;
  /** See `ConnectOptions.requestTimeoutMs`. */
  readonly requestTimeoutMs: number;
  /** See `ConnectOptions.connectTimeoutMs`. */
  readonly connectTimeoutMs: number;
  /** See `ConnectOptions.heartbeatIntervalMs`. */
  readonly heartbeatIntervalMs: number;
  /** See `ConnectOptions.heartbeatTimeoutMs`. */
  readonly heartbeatTimeoutMs: number;
  /** See `ConnectOptions.backoff`. */
  readonly backoff: Backoff;
  /** See `ConnectOptions.reconnect`. */
  readonly reconnect: boolean;
  /** See `ConnectOptions.sendRetryWindowMs`. */
  readonly sendRetryWindowMs: number;
  /** See `ConnectOptions.joinDirect`. */
  readonly joinDirect: boolean;
  /** The WebSocket implementation in use. */
  readonly WebSocket: WebSocketConstructor;
  /** See `ConnectOptions.onHandlerError`. */
  readonly onHandlerError: (error: unknown) => void;
}

/** `options` with defaults; throws a TypeError for options that cannot work. */
export function settings(options: ConnectOptions): Settings {
  if (!/^wss?:\/\//i.test(options.url)) {
    throw new TypeError(`the server URL must start with ws:// or wss://: ${options.url}`);
  }
  if (options.token === undefined && (options.name === undefined || options.name === "")) {
    throw new TypeError("give a token (servers with authentication) or a name (servers without)");
  }
  const WebSocket =
    options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (WebSocket === undefined) {
    throw new TypeError("no WebSocket here: pass one (on Node 20, the `ws` package's) as options.WebSocket");
  }
  return {
    url: options.url,
    token: typeof options.token === "string" ? fixedToken(options.token) : options.token,
    name: options.name,
    rooms: [...(options.rooms ?? [])],
    resumeFrom: [...(options.resumeFrom ?? [])],
    requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
    connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 10_000,
    heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 30_000,
    backoff: options.backoff ?? new Backoff(),
    reconnect: options.reconnect ?? true,
    sendRetryWindowMs: options.sendRetryWindowMs ?? 30_000,
    joinDirect: options.joinDirect ?? true,
    WebSocket,
    onHandlerError: options.onHandlerError ?? ((error) => console.error("chat client: an event handler threw", error)),
  };
}
