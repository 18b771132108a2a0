// A fake WebSocket for unit tests: a `FakeServer` hands out a constructor
// the client uses; each socket it made records the frames the client sent
// (decoded) and lets a test open it, push server frames, reply to requests
// and close it with any code, without a network.

import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ClientFrameSchema,
  ReplySchema,
  ServerFrameSchema,
  WelcomeSchema,
  type ClientFrame,
} from "../src/gen/chat/v1/chat_pb.js";
import type { WebSocketConstructor, WebSocketLike } from "../src/options.js";

/** One fake connection. */
export class FakeSocket implements WebSocketLike {
  binaryType = "blob";
  readyState = 0;
  protocol = "";
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  /** Frames the client sent, in order (heartbeat pings included). */
  readonly sent: ClientFrame[] = [];
  /** The close code the client gave, if it closed the socket. */
  closedByClient: number | undefined;
  /** Frames not yet taken by `nextFrame`. */
  private unread: ClientFrame[] = [];
  /** A `nextFrame` waiting for a frame. */
  private waiter: ((frame: ClientFrame) => void) | undefined;

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {}

  /** Completes the handshake, selecting `chat.v1`. */
  open(): void {
    this.readyState = 1;
    this.protocol = "chat.v1";
    this.onopen?.({});
  }

  /** Opens the socket and sends a Welcome. */
  accept(welcome: MessageInitShape<typeof WelcomeSchema> = {}): void {
    this.open();
    this.push({ frame: { case: "welcome", value: create(WelcomeSchema, { connectionId: "c1", serverId: "fake", ...welcome }) } });
  }

  /** Sends a server frame to the client. */
  push(frame: MessageInitShape<typeof ServerFrameSchema>): void {
    const bytes = toBinary(ServerFrameSchema, create(ServerFrameSchema, frame));
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }

  /** Answers request `frame` with `result`. */
  reply(frame: ClientFrame, result: MessageInitShape<typeof ReplySchema>["result"]): void {
    this.push({ frame: { case: "reply", value: create(ReplySchema, { requestId: frame.requestId, result }) } });
  }

  /** The server closes the connection with `code` and `reason`. */
  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** The next frame the client sends that is not a heartbeat ping. */
  async nextFrame(timeoutMs = 2_000): Promise<ClientFrame> {
    for (;;) {
      const frame = await this.nextAny(timeoutMs);
      if (frame.request.case !== "ping") return frame;
    }
  }

  /** The next frame the client sends, pings included. */
  nextAny(timeoutMs = 2_000): Promise<ClientFrame> {
    const frame = this.unread.shift();
    if (frame !== undefined) return Promise.resolve(frame);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no frame from the client within ${timeoutMs} ms`)), timeoutMs);
      this.waiter = (f) => {
        clearTimeout(timer);
        resolve(f);
      };
    });
  }

  send(data: Uint8Array): void {
    if (this.readyState !== 1) throw new Error("not open");
    const frame = fromBinary(ClientFrameSchema, data);
    this.sent.push(frame);
    const waiter = this.waiter;
    this.waiter = undefined;
    if (waiter !== undefined) waiter(frame);
    else this.unread.push(frame);
  }

  close(code = 1005, reason = ""): void {
    if (this.readyState === 3) return;
    this.closedByClient = code;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }
}

/** Makes fake sockets and lets tests wait for each new one. */
export class FakeServer {
  /** Every socket made, in order. */
  readonly sockets: FakeSocket[] = [];
  /** Sockets not yet taken by `nextSocket`. */
  private unclaimed: FakeSocket[] = [];
  /** A `nextSocket` waiting. */
  private waiter: ((socket: FakeSocket) => void) | undefined;

  /** The constructor to give the client as `options.WebSocket`. */
  readonly WebSocket: WebSocketConstructor;

  constructor() {
    const server = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url: string, protocols: string[]) {
        super(url, protocols);
        server.made(this);
      }
    };
  }

  /** The next socket the client opens. */
  nextSocket(timeoutMs = 2_000): Promise<FakeSocket> {
    const socket = this.unclaimed.shift();
    if (socket !== undefined) return Promise.resolve(socket);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no connection attempt within ${timeoutMs} ms`)), timeoutMs);
      this.waiter = (s) => {
        clearTimeout(timer);
        resolve(s);
      };
    });
  }

  /** The next socket, accepted with a Welcome. */
  async accepted(welcome: MessageInitShape<typeof WelcomeSchema> = {}): Promise<FakeSocket> {
    const socket = await this.nextSocket();
    socket.accept(welcome);
    return socket;
  }

  private made(socket: FakeSocket): void {
    this.sockets.push(socket);
    // Let the client set its handlers before the test drives the socket.
    queueMicrotask(() => {
      const waiter = this.waiter;
      this.waiter = undefined;
      if (waiter !== undefined) waiter(socket);
      else this.unclaimed.push(socket);
    });
  }
}
