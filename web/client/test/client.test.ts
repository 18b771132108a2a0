// Unit tests of the client against a fake WebSocket: credentials in the
// subprotocols, request/reply matching, typed and fail-fast errors,
// rejoin with the last sequence (never lowered), sends re-sent with the
// same id after a reconnect, the heartbeat, and 4401 stop versus retry.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { applicationSender, Backoff, ChatError, connect, fixedToken, type ChatClient, type ChatEvent, type ConnectOptions } from "../src/index.js";
import {
  DisconnectNoticeSchema,
  DisconnectReason,
  ErrorSchema,
  ErrorCode,
  JoinRoomResultSchema,
  MessageEventSchema,
  PongResultSchema,
  SendMessageResultSchema,
  ListRoomsResultSchema,
  LeaveRoomResultSchema,
  TypingResultSchema,
  type ClientFrame,
} from "../src/gen/chat/v1/chat_pb.js";
import { paceRetryMs } from "../src/connection.js";
import { FakeServer, type FakeSocket } from "./fake-socket.js";

/** Clients to close after each test. */
const clients: ChatClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

/** A client on `server` with short timings. */
function client(server: FakeServer, options: Partial<ConnectOptions> = {}): ChatClient {
  const c = connect({
    url: "ws://fake/v1/ws",
    name: "alice",
    WebSocket: server.WebSocket,
    backoff: new Backoff(5, 20),
    requestTimeoutMs: 500,
    connectTimeoutMs: 500,
    ...options,
  });
  clients.push(c);
  return c;
}

/** Records every event of `c`. */
function record(c: ChatClient): ChatEvent[] {
  const events: ChatEvent[] = [];
  c.on("*", (e) => events.push(e));
  return events;
}

/** Waits until `check` holds (bounded). */
async function until(check: () => boolean, what: string, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Answers a join frame with `latest` (and `backlogAfter` when resuming). */
function acceptJoin(socket: FakeSocket, frame: ClientFrame, latest: bigint, backlogAfter = latest): void {
  assert.equal(frame.request.case, "joinRoom");
  const room = frame.request.value.room;
  socket.reply(frame, {
    case: "joinRoom",
    value: create(JoinRoomResultSchema, { room, latestSequence: latest, backlogAfterSequence: backlogAfter }),
  });
}

/** A message event in `room` at `sequence`. */
function message(room: string, sequence: bigint, clientMessageId = `m${sequence}`) {
  return { frame: { case: "message" as const, value: create(MessageEventSchema, { room, sequence, text: `t${sequence}`, clientMessageId }) } };
}

test("offers chat.v1 and the name as base64url, or the bearer token", async () => {
  const server = new FakeServer();
  client(server, { name: "Zoë ✓" });
  const socket = await server.nextSocket();
  assert.deepEqual(socket.protocols, ["chat.v1", `name.${Buffer.from("Zoë ✓").toString("base64url")}`]);

  client(server, { token: " abc.def.ghi\n" });
  assert.deepEqual((await server.nextSocket()).protocols, ["chat.v1", "bearer.abc.def.ghi"]);
});

test("replies are matched to their requests by id, whatever their order", async () => {
  const server = new FakeServer();
  const c = client(server);
  const socket = await server.accepted();
  await c.waitConnected();
  const rooms = c.rooms();
  const pong = c.ping();
  const first = await socket.nextAny();
  const second = await socket.nextAny();
  assert.equal(second.request.case, "ping");
  assert.notEqual(first.requestId, second.requestId);
  socket.reply(second, { case: "pong", value: create(PongResultSchema, { serverTimeUnixMs: 7n }) });
  socket.reply(first, { case: "listRooms", value: create(ListRoomsResultSchema, { rooms: ["a", "b"] }) });
  assert.equal((await pong).serverTimeUnixMs, 7n);
  assert.deepEqual(await rooms, ["a", "b"]);
});

test("typing goes out as a request and another member's typing comes in as an event", async () => {
  const server = new FakeServer();
  const c = client(server);
  const events = record(c);
  const socket = await server.accepted();
  await c.waitConnected();
  const saying = c.typing("lobby", true);
  const frame = await socket.nextAny();
  assert.equal(frame.request.case, "typing");
  assert.ok(frame.request.case === "typing");
  assert.equal(frame.request.value.room, "lobby");
  assert.equal(frame.request.value.typing, true);
  socket.reply(frame, { case: "typing", value: create(TypingResultSchema, {}) });
  await saying;
  socket.push({
    frame: {
      case: "typing",
      value: {
        room: "lobby",
        typists: [
          { userId: "bob", displayName: "Bob" },
          { userId: "cat", displayName: "Cat" },
        ],
        count: 7,
        expiresAfterMs: 6000,
      },
    },
  });
  await until(() => events.some((e) => e.type === "typing"), "the typing event");
  const typing = events.find((e) => e.type === "typing");
  assert.ok(typing?.type === "typing");
  assert.equal(typing.room, "lobby");
  assert.deepEqual(
    typing.typists.map((m) => m.displayName),
    ["Bob", "Cat"],
  );
  assert.equal(typing.count, 7);
  assert.equal(typing.expiresAfterMs, 6000);
});

test("a server refusal is a ChatError with the contract's code and retry time", async () => {
  const server = new FakeServer();
  const c = client(server);
  const socket = await server.accepted();
  await c.waitConnected();
  const sending = c.send("lobby", "hi");
  const frame = await socket.nextFrame();
  socket.reply(frame, { case: "error", value: create(ErrorSchema, { code: ErrorCode.RATE_LIMITED, message: "slow down", retryAfterMs: 250 }) });
  await assert.rejects(sending, (e: unknown) => {
    assert.ok(e instanceof ChatError);
    assert.equal(e.code, "RATE_LIMITED");
    assert.equal(e.retryAfterMs, 250);
    assert.equal(e.fromServer, true);
    return true;
  });
  // An unknown code (a newer server) counts as INTERNAL.
  const joining = c.join("x");
  socket.reply(await socket.nextFrame(), { case: "error", value: create(ErrorSchema, { code: 99 as ErrorCode, message: "?" }) });
  await assert.rejects(joining, { code: "INTERNAL" });
});

test("requests fail fast while disconnected, with DISCONNECTED when the session dies, TIMEOUT when unanswered", async () => {
  const server = new FakeServer();
  const c = client(server, { requestTimeoutMs: 50 });
  // At once: the rejection settles before a zero-delay timer fires.
  const first = await Promise.race([
    c.members("lobby").catch((e: unknown) => e),
    new Promise((r) => setTimeout(() => r("late"), 0)),
  ]);
  assert.ok(first instanceof ChatError && first.code === "NOT_CONNECTED", String(first));

  const socket = await server.accepted();
  await c.waitConnected();
  await assert.rejects(c.rooms(), { code: "TIMEOUT" });

  const inFlight = c.members("lobby");
  await socket.nextFrame();
  socket.serverClose(1006);
  await assert.rejects(inFlight, { code: "DISCONNECTED" });
  await assert.rejects(c.history("lobby"), { code: "NOT_CONNECTED" });

  await c.close();
  await assert.rejects(c.ping(), { code: "CLOSED" });
});

test("a send lost with its session is re-sent with the same id after the room's rejoin", async () => {
  const server = new FakeServer();
  const c = client(server);
  const events = record(c);
  const first = await server.accepted();
  await c.waitConnected();
  const joining = c.join("lobby");
  acceptJoin(first, await first.nextFrame(), 4n);
  await joining;

  const sending = c.send("lobby", "hello");
  const original = await first.nextFrame();
  assert.equal(original.request.case, "sendMessage");
  first.serverClose(1006);

  const second = await server.accepted();
  const rejoin = await second.nextFrame();
  assert.equal(rejoin.request.case, "joinRoom");
  assert.equal(rejoin.request.value.sinceSequence, 4n);
  acceptJoin(second, rejoin, 5n, 4n);
  const resent = await second.nextFrame();
  assert.equal(resent.request.case, "sendMessage");
  assert.equal(resent.request.value.clientMessageId, original.request.value.clientMessageId);
  assert.equal(resent.request.value.text, "hello");
  second.reply(resent, {
    case: "sendMessage",
    value: create(SendMessageResultSchema, { room: "lobby", sequence: 5n, clientMessageId: resent.request.value.clientMessageId }),
  });
  assert.equal((await sending).sequence, 5n);
  const kinds = events.map((e) => e.type);
  assert.deepEqual(kinds.slice(0, 5), ["connected", "disconnected", "reconnecting", "connected", "rejoined"]);
});

test("a send made while disconnected waits for the session and goes out once", async () => {
  const server = new FakeServer();
  const c = client(server, { rooms: ["lobby"] });
  const sending = c.send("lobby", "early", { clientMessageId: "my-id" });
  const socket = await server.accepted();
  acceptJoin(socket, await socket.nextFrame(), 0n);
  const frame = await socket.nextFrame();
  assert.equal(frame.request.case, "sendMessage");
  assert.equal(frame.request.value.clientMessageId, "my-id");
  socket.reply(frame, { case: "sendMessage", value: create(SendMessageResultSchema, { room: "lobby", sequence: 1n, clientMessageId: "my-id" }) });
  assert.equal((await sending).clientMessageId, "my-id");
});

test("the resume point follows delivered messages and is never lowered", async () => {
  const server = new FakeServer();
  const c = client(server);
  const first = await server.accepted();
  await c.waitConnected();
  const joining = c.join("lobby");
  acceptJoin(first, await first.nextFrame(), 5n);
  await joining;
  assert.equal(c.lastSeen("lobby"), 5n);
  first.push(message("lobby", 6n));
  first.push(message("lobby", 7n));
  first.push(message("lobby", 3n)); // out of order: must not lower it
  first.push(message("other", 9n)); // a room the client is not in: not tracked
  assert.equal(c.lastSeen("lobby"), 7n);
  assert.equal(c.lastSeen("other"), undefined);
  first.serverClose(1006);

  const second = await server.accepted();
  const rejoin = await second.nextFrame();
  assert.equal(rejoin.request.case, "joinRoom");
  assert.equal(rejoin.request.value.sinceSequence, 7n);
  // A reply whose backlog starts lower (it does not, but the client must not care).
  acceptJoin(second, rejoin, 9n, 2n);
  await until(() => c.lastSeen("lobby") === 7n, "the rejoin");
  second.push(message("lobby", 8n));
  assert.equal(c.lastSeen("lobby"), 8n);
});

test("the rejoin is reported before its backlog, which arrives in order", async () => {
  const server = new FakeServer();
  const c = client(server, { rooms: ["lobby"] });
  const events = record(c);
  const first = await server.accepted();
  const join = await first.nextFrame();
  assert.equal(join.request.case, "joinRoom");
  assert.equal(join.request.value.sinceSequence, undefined, "a first join does not resume");
  acceptJoin(first, join, 2n);
  await until(() => c.lastSeen("lobby") === 2n, "the first join");
  first.serverClose(1001);

  const second = await server.accepted();
  const rejoin = await second.nextFrame();
  assert.equal(rejoin.request.case, "joinRoom");
  assert.equal(rejoin.request.value.sinceSequence, 2n);
  acceptJoin(second, rejoin, 4n, 2n);
  second.push(message("lobby", 3n));
  second.push(message("lobby", 4n));
  await until(() => events.filter((e) => e.type === "message").length === 2, "the backlog");
  const tail = events.filter((e) => e.type === "rejoined" || e.type === "message").slice(-3);
  assert.equal(tail[0]!.type, "rejoined");
  assert.deepEqual(
    tail.slice(1).map((e) => (e.type === "message" ? e.message.sequence : -1n)),
    [3n, 4n],
  );
});

test("a DisconnectNotice is reported and its reconnect_after_ms honoured", async () => {
  const server = new FakeServer();
  const c = client(server);
  const events = record(c);
  const socket = await server.accepted();
  await c.waitConnected();
  socket.push({
    frame: {
      case: "disconnect",
      value: create(DisconnectNoticeSchema, { reason: DisconnectReason.SHUTTING_DOWN, message: "bye", reconnectAfterMs: 120 }),
    },
  });
  socket.serverClose(1001);
  await until(() => events.some((e) => e.type === "reconnecting"), "reconnecting");
  const disconnected = events.find((e) => e.type === "disconnected");
  assert.ok(disconnected?.type === "disconnected");
  assert.equal(disconnected.notice?.reason, DisconnectReason.SHUTTING_DOWN);
  assert.match(disconnected.reason, /bye/);
  const reconnecting = events.find((e) => e.type === "reconnecting");
  assert.ok(reconnecting?.type === "reconnecting");
  assert.ok(reconnecting.delayMs >= 120, `${reconnecting.delayMs}`);
});

test("a notice that says to stay disconnected stops the client with its message", async () => {
  const server = new FakeServer();
  const c = client(server);
  const events = record(c);
  const socket = await server.accepted();
  await c.waitConnected();
  socket.push({
    frame: {
      case: "disconnect",
      value: create(DisconnectNoticeSchema, {
        reason: DisconnectReason.DISCONNECTED,
        message: "your account was suspended",
        stayDisconnected: true,
      }),
    },
  });
  socket.serverClose(1000);
  await until(() => events.some((e) => e.type === "stopped"), "stopped");
  const stopped = events.find((e) => e.type === "stopped");
  assert.ok(stopped?.type === "stopped");
  assert.equal(stopped.reason, "your account was suspended");
  assert.equal(stopped.closeReason, "disconnected");
  assert.ok(!events.some((e) => e.type === "reconnecting"), "no reconnect");
  assert.equal(c.state, "stopped");
});

test("pings within a third of the idle timeout; a silent server is replaced", async () => {
  const server = new FakeServer();
  const c = client(server, { heartbeatTimeoutMs: 150 });
  const events = record(c);
  const socket = await server.accepted({ idleTimeoutMs: 60 });
  const ping = await socket.nextAny(200);
  assert.equal(ping.request.case, "ping");
  // Nothing is answered: after the heartbeat timeout the session is dropped.
  await until(() => events.some((e) => e.type === "disconnected"), "the heartbeat timeout", 1_000);
  const disconnected = events.find((e) => e.type === "disconnected");
  assert.ok(disconnected?.type === "disconnected");
  assert.match(disconnected.reason, /nothing heard/);
  await server.accepted();
  await c.waitConnected();
});

test("4401 with a reason the same token keeps stops a fixed token; 4401 key and 4429 are retried", async () => {
  const server = new FakeServer();
  const c = client(server, { token: fixedToken("t") });
  const events = record(c);
  (await server.nextSocket()).open();
  server.sockets[0]!.serverClose(4401, "key");
  const retried = await server.nextSocket();
  retried.open();
  retried.serverClose(4429, "user");
  const last = await server.nextSocket();
  last.open();
  last.serverClose(4401, "expired");
  await until(() => c.state === "stopped", "the stop");
  assert.deepEqual(
    events.map((e) => e.type),
    ["reconnecting", "reconnecting", "stopped"],
  );
  const stopped = events.at(-1);
  assert.ok(stopped?.type === "stopped");
  assert.equal(stopped.closeReason, "expired");
  await assert.rejects(c.ping(), { code: "STOPPED" });
  await assert.rejects(c.waitConnected(), { code: "STOPPED" });
  // The event stream has ended.
  const after = await c.events().next();
  assert.equal(after.done, true);
});

test("a refusal by the server's pace (4429 rate:<ms>) waits its retry time, stretched by up to itself", async () => {
  const server = new FakeServer();
  const c = client(server);
  const events = record(c);
  const first = await server.nextSocket();
  first.open();
  first.serverClose(4429, "rate:150");
  await until(() => events.some((e) => e.type === "reconnecting"), "reconnecting");
  const reconnecting = events.find((e) => e.type === "reconnecting");
  assert.ok(reconnecting?.type === "reconnecting");
  assert.ok(reconnecting.delayMs >= 150 && reconnecting.delayMs < 300, `${reconnecting.delayMs}`);
  assert.match(reconnecting.reason, /rate:150/);
  await server.accepted();
  await c.waitConnected();
  // Other ends name no retry time; a malformed one is ignored.
  const end = { reason: "", notice: undefined, established: false, closeCode: 4429, closeReason: "user" };
  assert.equal(paceRetryMs(end), 0);
  assert.equal(paceRetryMs({ ...end, closeReason: "rate:" }), 0);
  assert.equal(paceRetryMs({ ...end, closeReason: "rate:12" }), 12);
  assert.equal(paceRetryMs({ ...end, closeCode: 1000, closeReason: "rate:12" }), 0);
});

test("a token provider is asked before every attempt and a refusal is retried with the next token", async () => {
  const server = new FakeServer();
  let asked = 0;
  const c = client(server, { token: async () => `t${++asked}` });
  const first = await server.nextSocket();
  assert.equal(first.protocols[1], "bearer.t1");
  first.open();
  first.serverClose(4401, "expired");
  const second = await server.accepted();
  assert.equal(second.protocols[1], "bearer.t2");
  await c.waitConnected();
  assert.equal(c.state, "connected");
});

test("a refused name stops the client", async () => {
  const server = new FakeServer();
  const c = client(server, { name: "bad name" });
  const socket = await server.nextSocket();
  socket.open();
  socket.serverClose(4401, "name");
  await assert.rejects(c.waitConnected(), { code: "STOPPED" });
});

test("a room the server will never accept is given up; others are rejoined", async () => {
  const server = new FakeServer();
  const c = client(server, { rooms: ["bad!", "lobby"] });
  const events = record(c);
  const socket = await server.accepted();
  const bad = await socket.nextFrame();
  socket.reply(bad, { case: "error", value: create(ErrorSchema, { code: ErrorCode.INVALID_ARGUMENT, message: "bad room" }) });
  acceptJoin(socket, await socket.nextFrame(), 0n);
  await until(() => events.filter((e) => e.type === "rejoined").length === 2, "both rejoins");
  assert.deepEqual(c.joinedRooms(), ["lobby"]);
});

test("the events iterator yields in order and ends at close", async () => {
  const server = new FakeServer();
  const c = client(server);
  const iterator = c.events();
  const socket = await server.accepted();
  await c.waitConnected();
  socket.push({ frame: { case: "notification", value: { text: "hello all" } } });
  const seen: string[] = [];
  const closing = c.close();
  for await (const event of iterator) seen.push(event.type);
  await closing;
  assert.deepEqual(seen, ["connected", "notification", "disconnected"]);
  assert.equal(c.state, "closed");
  assert.equal(socket.closedByClient, 1000);
});

test("a server frame that is not a Welcome first ends the attempt", async () => {
  const server = new FakeServer();
  const c = client(server);
  const events = record(c);
  const socket = await server.nextSocket();
  socket.open();
  socket.push(message("lobby", 1n));
  await until(() => events.some((e) => e.type === "reconnecting"), "reconnecting");
  const reconnecting = events[0];
  assert.ok(reconnecting?.type === "reconnecting");
  assert.match(reconnecting.reason, /welcome/);
  await server.accepted();
  await c.waitConnected();
});

test("a room's first rejoin answered after the request timeout still sets the resume point", async () => {
  const server = new FakeServer();
  const c = client(server, { rooms: ["lobby"], requestTimeoutMs: 100 });
  const first = await server.accepted();
  const join = await first.nextFrame();
  assert.equal(join.request.case, "joinRoom");
  await new Promise((r) => setTimeout(r, 250)); // the client stopped waiting
  acceptJoin(first, join, 5n);
  first.push(message("lobby", 6n));
  await until(() => c.lastSeen("lobby") === 6n, "the late reply and the message to count");
  first.serverClose(1006);

  let second = await server.accepted();
  let rejoin = await second.nextFrame();
  // A retry of the first join may still be in flight on the first session.
  while (rejoin.request.case !== "joinRoom") rejoin = await second.nextFrame();
  assert.equal(rejoin.request.value.sinceSequence, 6n);
});

test("a send refused as UNAVAILABLE is tried again with the same id within the window", async () => {
  const server = new FakeServer();
  const c = client(server);
  const socket = await server.accepted();
  await c.waitConnected();
  const sending = c.send("lobby", "hello", { clientMessageId: "my-id" });
  for (let attempt = 0; attempt < 2; attempt++) {
    const frame = await socket.nextFrame();
    assert.equal(frame.request.case, "sendMessage");
    assert.equal(frame.request.value.clientMessageId, "my-id");
    socket.reply(frame, { case: "error", value: create(ErrorSchema, { code: ErrorCode.UNAVAILABLE, message: "store down" }) });
  }
  const frame = await socket.nextFrame();
  assert.equal(frame.request.case, "sendMessage");
  assert.equal(frame.request.value.clientMessageId, "my-id");
  socket.reply(frame, { case: "sendMessage", value: create(SendMessageResultSchema, { room: "lobby", sequence: 1n, clientMessageId: "my-id" }) });
  assert.equal((await sending).sequence, 1n);
});

test("a send refused as UNAVAILABLE fails with it once the window is over", async () => {
  const server = new FakeServer();
  const c = client(server, { sendRetryWindowMs: 300 });
  const socket = await server.accepted();
  await c.waitConnected();
  const sending = c.send("lobby", "hello");
  let attempts = 0;
  const answering = (async () => {
    for (;;) {
      const frame = await socket.nextFrame(1_000).catch(() => undefined);
      if (frame === undefined) return;
      attempts++;
      socket.reply(frame, { case: "error", value: create(ErrorSchema, { code: ErrorCode.UNAVAILABLE, message: "store down" }) });
    }
  })();
  await assert.rejects(sending, (e: unknown) => e instanceof ChatError && e.code === "UNAVAILABLE");
  await answering;
  assert.ok(attempts >= 2 && attempts <= 8, `${attempts} attempts`);
});

test("a rejoin reply that says the numbering went back starts the resume point over", async () => {
  const server = new FakeServer();
  const c = client(server);
  const first = await server.accepted();
  await c.waitConnected();
  const joining = c.join("lobby");
  acceptJoin(first, await first.nextFrame(), 7n);
  await joining;
  first.serverClose(1006);

  const second = await server.accepted();
  const rejoin = await second.nextFrame();
  assert.equal(rejoin.request.case, "joinRoom");
  assert.equal(rejoin.request.value.sinceSequence, 7n);
  second.reply(rejoin, {
    case: "joinRoom",
    value: create(JoinRoomResultSchema, { room: "lobby", latestSequence: 2n, backlogAfterSequence: 0n, sequenceReset: true }),
  });
  await until(() => c.lastSeen("lobby") === 0n, "the reset");
  second.push(message("lobby", 1n));
  assert.equal(c.lastSeen("lobby"), 1n);
});

test("a fresh join sets the resume point where the room stands, and a leave forgets it", async () => {
  const server = new FakeServer();
  const c = client(server);
  const socket = await server.accepted();
  await c.waitConnected();
  let joining = c.join("lobby");
  acceptJoin(socket, await socket.nextFrame(), 10n);
  await joining;
  socket.push(message("lobby", 11n));
  assert.equal(c.lastSeen("lobby"), 11n);
  const leaving = c.leave("lobby");
  const leave = await socket.nextFrame();
  assert.equal(leave.request.case, "leaveRoom");
  socket.reply(leave, { case: "leaveRoom", value: create(LeaveRoomResultSchema, { room: "lobby" }) });
  await leaving;
  assert.equal(c.lastSeen("lobby"), undefined);
  // Joined again where the room stands now (its store went back): 3, not 11.
  joining = c.join("lobby");
  acceptJoin(socket, await socket.nextFrame(), 3n);
  await joining;
  assert.equal(c.lastSeen("lobby"), 3n);
  socket.serverClose(1006);
  const second = await server.accepted();
  const rejoin = await second.nextFrame();
  assert.equal(rejoin.request.case, "joinRoom");
  assert.equal(rejoin.request.value.sinceSequence, 3n);
});

test("a late rejoin is not reported as failed by the ALREADY_A_MEMBER of its repeat", async () => {
  const server = new FakeServer();
  const c = client(server, { rooms: ["lobby"], requestTimeoutMs: 100 });
  const events = record(c);
  const socket = await server.accepted();
  const first = await socket.nextFrame();
  const second = await socket.nextFrame(2_000);
  assert.equal(second.request.case, "joinRoom");
  acceptJoin(socket, first, 5n);
  socket.reply(second, { case: "error", value: create(ErrorSchema, { code: ErrorCode.ALREADY_A_MEMBER, message: "member" }) });
  await new Promise((r) => setTimeout(r, 200));
  const outcomes = events
    .filter((e) => e.type === "rejoined")
    .map((e) => (e.type === "rejoined" && e.ok ? "ok" : e.type === "rejoined" && !e.ok ? e.error.code : "?"));
  assert.equal(outcomes.at(-1), "ok", outcomes.join(","));
  assert.ok(outcomes.every((o) => o === "ok" || o === "TIMEOUT"), outcomes.join(","));
});

test("resume points from an earlier client are used on the first session", async () => {
  const server = new FakeServer();
  const c = client(server, { resumeFrom: [["lobby", 42n]] });
  const socket = await server.accepted();
  const rejoin = await socket.nextFrame();
  assert.equal(rejoin.request.case, "joinRoom");
  assert.equal(rejoin.request.value.room, "lobby");
  assert.equal(rejoin.request.value.sinceSequence, 42n);
  acceptJoin(socket, rejoin, 50n);
  await until(() => c.lastSeen("lobby") === 50n, "the rejoin");
});

test("joining a room the client is in resumes from its point", async () => {
  const server = new FakeServer();
  const c = client(server, { rooms: ["lobby"] });
  const first = await server.accepted();
  acceptJoin(first, await first.nextFrame(), 5n);
  await until(() => c.lastSeen("lobby") === 5n, "the first join");
  first.serverClose(1006);
  const second = await server.accepted();
  const rejoin = await second.nextFrame();
  assert.equal(rejoin.request.case, "joinRoom");
  const joining = c.join("lobby");
  const join = await second.nextFrame();
  assert.equal(join.request.case, "joinRoom");
  assert.equal(join.request.value.sinceSequence, 5n);
  acceptJoin(second, join, 7n, 5n);
  second.push(message("lobby", 6n));
  second.push(message("lobby", 7n));
  second.reply(rejoin, { case: "error", value: create(ErrorSchema, { code: ErrorCode.ALREADY_A_MEMBER, message: "member" }) });
  await joining;
  assert.equal(c.lastSeen("lobby"), 7n);
});

test("an application's bot or the system is told apart from a person", () => {
  assert.equal(applicationSender("system"), "system");
  assert.equal(applicationSender("bot:ci"), "bot");
  assert.equal(applicationSender("BOT:ci"), "bot");
  assert.equal(applicationSender("alice"), undefined);
  assert.equal(applicationSender("robot:x"), undefined);
});

test("a removal from a room is an event, and the room is not rejoined", async () => {
  const server = new FakeServer();
  const c = client(server);
  const events = record(c);
  const socket = await server.accepted();
  await c.waitConnected();
  const joining = c.join("lobby");
  const frame = await socket.nextAny();
  assert.equal(frame.request.case, "joinRoom");
  socket.reply(frame, { case: "joinRoom", value: create(JoinRoomResultSchema, { room: "lobby" }) });
  await joining;
  assert.deepEqual(c.joinedRooms(), ["lobby"]);
  socket.push({ frame: { case: "removed", value: { room: "lobby", reason: "off-topic" } } });
  await until(() => events.some((e) => e.type === "removed"), "the removal");
  const removed = events.find((e) => e.type === "removed");
  assert.ok(removed?.type === "removed");
  assert.deepEqual([removed.room, removed.reason], ["lobby", "off-topic"]);
  assert.deepEqual(c.joinedRooms(), []);
});
