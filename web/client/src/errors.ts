// What a request can fail with: `ChatError`, whose `code` is either one of
// the contract's `ErrorCode` names (the server refused the request and
// nothing changed) or one of the client's own codes (no session, session
// lost, no reply in time, client stopped or closed).

import { ErrorCode } from "./gen/chat/v1/chat_pb.js";
import type { Error as ErrorFrame } from "./gen/chat/v1/chat_pb.js";

/** A code the server sends: the contract's `ErrorCode`, without its prefix. */
export type ServerErrorCode = Exclude<keyof typeof ErrorCode, "UNSPECIFIED">;

/** A code the client gives for failures that happen on its side. */
export type ClientErrorCode =
  /** There is no session right now (connecting or reconnecting). */
  | "NOT_CONNECTED"
  /** The session ended before the reply arrived; the request may or may not have taken effect. */
  | "DISCONNECTED"
  /** No reply within the request timeout. */
  | "TIMEOUT"
  /** The client stopped for good: the server refused its credentials, or ended the session for good. */
  | "STOPPED"
  /** The client was closed by `close()`. */
  | "CLOSED"
  /** The server answered with a reply of another kind. */
  | "UNEXPECTED_REPLY";

/** Every code a `ChatError` can carry. */
export type ChatErrorCode = ServerErrorCode | ClientErrorCode;

/** A request did not succeed. */
export class ChatError extends Error {
  /** The stable code: the server's, or the client's own. */
  readonly code: ChatErrorCode;
  /** For RATE_LIMITED and UNAVAILABLE: when to retry, in milliseconds (0 if unknown). */
  readonly retryAfterMs: number;

  constructor(code: ChatErrorCode, message: string, retryAfterMs = 0) {
    super(`${code}: ${message}`);
    this.name = "ChatError";
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }

  /** A reply's `Error` as a `ChatError`. */
  static fromFrame(error: ErrorFrame): ChatError {
    return new ChatError(serverCodeName(error.code), error.message, error.retryAfterMs);
  }

  /** Whether the server refused the request (as opposed to a failure on the client's side). */
  get fromServer(): boolean {
    return !CLIENT_CODES.has(this.code);
  }
}

/** The client's own codes, to tell them from the server's. */
const CLIENT_CODES: ReadonlySet<ChatErrorCode> = new Set<ChatErrorCode>([
  "NOT_CONNECTED",
  "DISCONNECTED",
  "TIMEOUT",
  "STOPPED",
  "CLOSED",
  "UNEXPECTED_REPLY",
]);

/**
 * The contract's code name for `code`. Unknown codes (a newer server) and
 * UNSPECIFIED count as INTERNAL, as the contract says.
 */
export function serverCodeName(code: number): ServerErrorCode {
  const name = ErrorCode[code] as keyof typeof ErrorCode | undefined;
  return name === undefined || name === "UNSPECIFIED" ? "INTERNAL" : name;
}
