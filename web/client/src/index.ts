// The package's public surface: `connect` and `ChatClient`, their options,
// events and errors, the backoff and token helpers, and the wire types
// generated from proto/chat/v1/chat.proto.

export { connect, ChatClient, type HistoryOptions, type SendOptions } from "./client.js";
export type { ConnectOptions, WebSocketConstructor, WebSocketLike } from "./options.js";
export type { ConnectionState } from "./shared.js";
export type {
  ChatEvent,
  EventOf,
  ConnectedEvent,
  RejoinedEvent,
  MessageReceivedEvent,
  MembersChangedEvent,
  MemberJoinedEvent,
  MemberLeftEvent,
  TypingEvent,
  RemovedEvent,
  ReadReceiptsEvent,
  DirectOpenedEvent,
  NotificationEvent,
  DisconnectedEvent,
  ReconnectingEvent,
  StoppedEvent,
} from "./events.js";
export { ChatError, type ChatErrorCode, type ClientErrorCode, type ServerErrorCode } from "./errors.js";
export { Backoff } from "./backoff.js";
export { fixedToken, type TokenProvider } from "./token.js";
export { applicationSender } from "./sender.js";
export { PROTOCOL, CLOSE_UNAUTHORIZED, CLOSE_LIMITED } from "./socket.js";
export * as proto from "./gen/chat/v1/chat_pb.js";
