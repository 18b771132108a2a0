// Integration tests against a real `chat-server` over its WebSocket
// endpoint (see test/server.ts): two clients in a room, members and rooms,
// history pages, typing, a server restart (SQLite store) while a client is
// connected, a graceful shutdown's notice, the heartbeat that keeps an
// idle session open, a send retried across a reconnect stored once, and
// tokens (accepted, and refused for good). Skipped, with the reason, when there
// is no server binary.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import WebSocket from "ws";
import { Backoff, connect, fixedToken, type ChatClient, type ChatEvent, type ConnectOptions } from "../src/index.js";
import { DisconnectReason, MessageKind, type MessageEvent } from "../src/gen/chat/v1/chat_pb.js";
import { TestServer, unavailable } from "./server.js";

const skip = unavailable();
if (skip !== undefined) console.log(`# skipping the integration tests: ${skip}`);

/** Server settings for authentication with JWTs (HS256). */
const AUTH = { CHAT_AUTH__MODE: "jwt", CHAT_AUTH__SECRET: "an-integration-test-secret-of-32-bytes!" };

/** Servers and clients to stop when the tests end. */
const servers: TestServer[] = [];
const clients: ChatClient[] = [];
after(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

/** Starts a server that is stopped at the end. */
async function server(options: Parameters<typeof TestServer.start>[0] = {}): Promise<TestServer> {
  const s = await TestServer.start(options);
  servers.push(s);
  return s;
}

/** A client of `s` using the `ws` package, closed at the end. */
function client(s: TestServer, options: Partial<ConnectOptions>): ChatClient {
  const c = connect({ url: s.url, WebSocket, requestTimeoutMs: 5_000, ...options });
  clients.push(c);
  return c;
}

/** Collects the messages `c` receives, by room. */
function inbox(c: ChatClient): Map<string, MessageEvent[]> {
  const rooms = new Map<string, MessageEvent[]>();
  c.on("message", ({ message }) => {
    const list = rooms.get(message.room) ?? [];
    list.push(message);
    rooms.set(message.room, list);
  });
  return rooms;
}

/** Waits until `check` holds (bounded). */
async function until(check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The sequences of `messages`. */
const sequences = (messages: MessageEvent[] | undefined): number[] => (messages ?? []).map((m) => Number(m.sequence));

/** 1, 2, …, n. */
const upTo = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);

test("the server has its WebSocket endpoint", { skip }, async () => {
  const s = await server();
  // Not an upgrade: 400 (a server without the endpoint would answer 404).
  const response = await fetch(`${s.http}/v1/ws`);
  assert.equal(response.status, 400, `GET /v1/ws answered ${response.status}`);
});

test("two clients in a room see each other's messages, members and rooms", { skip }, async () => {
  const s = await server();
  const alice = client(s, { name: "alice" });
  const bob = client(s, { name: "Zoë" });
  const aliceInbox = inbox(alice);
  const bobInbox = inbox(bob);
  const welcome = await bob.waitConnected();
  assert.equal(welcome.you?.displayName, "Zoë");
  await alice.waitConnected();
  await alice.join("lobby");
  // Presence comes coalesced: alice's own join may come first, alone.
  const joined = new Promise<ChatEvent>((resolve) =>
    alice.on("membersChanged", (e) => {
      if (e.joined.some((m) => m.displayName === "Zoë")) resolve(e);
    }),
  );
  const bobJoin = await bob.join("lobby");
  assert.deepEqual(bobJoin.members.map((m) => m.displayName).sort(), ["Zoë", "alice"]);
  const event = await joined;
  assert.ok(event.type === "membersChanged" && event.memberCount === 2 && event.left.length === 0);

  const ack = await alice.send("lobby", "hello bob");
  await bob.send("lobby", "hello alice");
  await until(() => sequences(aliceInbox.get("lobby")).length === 2 && sequences(bobInbox.get("lobby")).length === 2, "both messages");
  for (const box of [aliceInbox, bobInbox]) {
    assert.deepEqual(box.get("lobby")!.map((m) => [Number(m.sequence), m.sender?.displayName, m.text]), [
      [1, "alice", "hello bob"],
      [2, "Zoë", "hello alice"],
    ]);
  }
  assert.equal(aliceInbox.get("lobby")![0]!.clientMessageId, ack.clientMessageId);
  assert.deepEqual((await alice.members("lobby")).map((m) => m.displayName), ["Zoë", "alice"]);
  assert.deepEqual(await bob.rooms(), ["lobby"]);

  const left = new Promise<ChatEvent>((resolve) =>
    alice.on("membersChanged", (e) => {
      if (e.left.length > 0) resolve(e);
    }),
  );
  await bob.leave("lobby");
  const leftEvent = await left;
  assert.ok(leftEvent.type === "membersChanged" && leftEvent.left[0]?.displayName === "Zoë" && leftEvent.memberCount === 1);
  await assert.rejects(bob.members("lobby"), { code: "NOT_A_MEMBER" });
  await assert.rejects(alice.join("not a room!"), { code: "INVALID_ARGUMENT" });
});

test("history pages backward and forward", { skip }, async () => {
  const s = await server();
  const c = client(s, { name: "pager", rooms: ["pages"] });
  await c.waitConnected();
  await until(() => c.lastSeen("pages") !== undefined, "the join");
  for (let i = 1; i <= 12; i++) await c.send("pages", `m${i}`);
  const latest = await c.history("pages", { limit: 5 });
  assert.equal(latest.latestSequence, 12n);
  assert.deepEqual(sequences(latest.messages), [8, 9, 10, 11, 12]);
  const older = await c.history("pages", { from: latest.messages[0]!.sequence, limit: 5 });
  assert.deepEqual(sequences(older.messages), [3, 4, 5, 6, 7]);
  const first = await c.history("pages", { direction: "forward", from: 0, limit: 5 });
  assert.deepEqual(sequences(first.messages), [1, 2, 3, 4, 5]);
  assert.deepEqual(first.messages.map((m) => m.text), ["m1", "m2", "m3", "m4", "m5"]);
  const rest = await c.history("pages", { direction: "forward", from: 5n });
  assert.deepEqual(sequences(rest.messages), [6, 7, 8, 9, 10, 11, 12]);
  // Reading needs permission, not membership.
  const other = client(s, { name: "reader" });
  await other.waitConnected();
  assert.equal((await other.history("pages")).messages.length, 12);
});

test("edits and deletes are numbered among the messages, reach both clients and show in history", { skip }, async () => {
  const s = await server();
  const alice = client(s, { name: "alice", rooms: ["changes"] });
  const bob = client(s, { name: "bob", rooms: ["changes"] });
  const aliceInbox = inbox(alice);
  const bobInbox = inbox(bob);
  await until(() => alice.lastSeen("changes") !== undefined && bob.lastSeen("changes") !== undefined, "the joins");
  await alice.send("changes", "helo");
  const edit = await alice.edit("changes", 1, "hello");
  assert.equal(edit.sequence, 2n);
  await assert.rejects(bob.edit("changes", 1, "mine"), { code: "NOT_THE_AUTHOR" });
  await assert.rejects(bob.delete("changes", 1n), { code: "NOT_THE_AUTHOR" });
  await assert.rejects(alice.edit("changes", 7, "x"), { code: "MESSAGE_NOT_FOUND" });
  const deleted = await alice.delete("changes", 1);
  assert.equal(deleted.sequence, 3n, "refusals took no number");
  await until(() => sequences(bobInbox.get("changes")).length === 3 && sequences(aliceInbox.get("changes")).length === 3, "the changes");
  for (const box of [aliceInbox, bobInbox]) {
    assert.deepEqual(box.get("changes")!.map((m) => [Number(m.sequence), m.kind, Number(m.targetSequence), m.text]), [
      [1, MessageKind.MESSAGE, 0, "helo"],
      [2, MessageKind.EDIT, 1, "hello"],
      [3, MessageKind.DELETE, 1, ""],
    ]);
  }
  const page = await bob.history("changes");
  assert.deepEqual(page.messages.map((m) => [Number(m.sequence), m.kind, m.text, m.deleted]), [
    [1, MessageKind.MESSAGE, "", true],
    [2, MessageKind.EDIT, "", false],
    [3, MessageKind.DELETE, "", false],
  ]);
});

test("reactions are numbered, reach the other client and show in history", { skip }, async () => {
  const s = await server();
  const alice = client(s, { name: "alice", rooms: ["rx"] });
  const bob = client(s, { name: "bob", rooms: ["rx"] });
  const bobInbox = inbox(bob);
  await until(() => alice.lastSeen("rx") !== undefined && bob.lastSeen("rx") !== undefined, "the joins");
  await alice.send("rx", "party?");
  assert.equal((await bob.react("rx", 1, "🎉")).sequence, 2n);
  await alice.react("rx", 1n, "🎉");
  await alice.react("rx", 1, "👍");
  await alice.react("rx", 1, "👍", false);
  await assert.rejects(bob.react("rx", 1, "two words"), { code: "INVALID_ARGUMENT" });
  await assert.rejects(bob.react("rx", 2, "🎉"), { code: "MESSAGE_NOT_FOUND" });
  await until(() => sequences(bobInbox.get("rx")).length === 5, "the reactions");
  assert.deepEqual(bobInbox.get("rx")!.map((m) => [m.kind, m.text, m.sender?.displayName]), [
    [MessageKind.MESSAGE, "party?", "alice"],
    [MessageKind.REACTION_ADDED, "🎉", "bob"],
    [MessageKind.REACTION_ADDED, "🎉", "alice"],
    [MessageKind.REACTION_ADDED, "👍", "alice"],
    [MessageKind.REACTION_REMOVED, "👍", "alice"],
  ]);
  const page = await bob.history("rx", { direction: "forward", limit: 1 });
  assert.deepEqual(page.messages[0]!.reactions.map((r) => [r.emoji, r.count, r.members.map((m) => m.displayName)]), [
    ["🎉", 2, ["bob", "alice"]],
  ]);
});

test("a direct conversation reaches both users, and nobody else may join it", { skip }, async () => {
  const s = await server();
  const alice = client(s, { name: "alice" });
  const bob = client(s, { name: "bob" });
  const eve = client(s, { name: "eve" });
  const bobInbox = inbox(bob);
  await Promise.all([alice.waitConnected(), bob.waitConnected(), eve.waitConnected()]);
  const heard = new Promise<ChatEvent>((resolve) => bob.on("directOpened", resolve));
  const opened = await alice.openDirect("bob");
  assert.match(opened.room, /^dm\.[0-9a-f]{40}$/);
  assert.equal(opened.peer?.userId, "bob");
  const event = await heard;
  assert.ok(event.type === "directOpened" && event.conversation.room === opened.room);
  await until(() => bob.joinedRooms().includes(opened.room), "bob's join of the conversation");
  await alice.send(opened.room, "psst");
  await until(() => sequences(bobInbox.get(opened.room)).length === 1, "the message");
  assert.deepEqual((await bob.listDirect()).map((c) => [c.room, c.peer?.userId]), [[opened.room, "alice"]]);
  await assert.rejects(eve.join(opened.room), { code: "PERMISSION_DENIED" });
  await assert.rejects(eve.history(opened.room), { code: "PERMISSION_DENIED" });
  await assert.rejects(eve.openDirect("eve"), { code: "INVALID_ARGUMENT" });
});

test("a read mark is shared by the user's sessions, announced to the room and reported on join", { skip }, async () => {
  const s = await server();
  const bob = client(s, { name: "bob", rooms: ["reads"] });
  await until(() => bob.lastSeen("reads") !== undefined, "bob's join");
  for (const text of ["one", "two", "three"]) await bob.send("reads", text);
  const alice = client(s, { name: "alice" });
  await alice.waitConnected();
  const joined = await alice.join("reads");
  assert.deepEqual([joined.readSequence, joined.unreadCount], [0n, 3]);
  const heard = new Promise<ChatEvent>((resolve) => bob.on("readReceipts", resolve));
  const marked = await alice.markRead("reads", 2);
  assert.deepEqual([marked.readSequence, marked.unreadCount], [2n, 1]);
  const event = await heard;
  assert.ok(event.type === "readReceipts");
  assert.deepEqual(event.positions.map((p) => [p.member?.displayName, Number(p.sequence)]), [["alice", 2]]);
  assert.equal((await alice.markRead("reads", 1)).readSequence, 2n, "never backwards");
  // Another session of alice's sees the shared position when it joins.
  const again = client(s, { name: "alice" });
  await again.waitConnected();
  const rejoined = await again.join("reads");
  assert.deepEqual([rejoined.readSequence, rejoined.unreadCount], [2n, 1]);
  await assert.rejects(bob.markRead("elsewhere", 1), { code: "NOT_A_MEMBER" });
});

test("typing reaches the other member as the room's state, never the typist, and the message ends it", { skip }, async () => {
  const s = await server();
  const alice = client(s, { name: "alice", rooms: ["typing"] });
  const bob = client(s, { name: "bob", rooms: ["typing"] });
  await until(() => alice.lastSeen("typing") !== undefined && bob.lastSeen("typing") !== undefined, "both joined");
  const heard: ChatEvent[] = [];
  alice.on("typing", (e) => heard.push(e));
  const told: ChatEvent[] = [];
  bob.on("typing", (e) => told.push(e));
  await bob.typing("typing", true);
  await until(() => heard.length > 0, "bob typing");
  const first = heard[0];
  assert.ok(first?.type === "typing");
  assert.deepEqual([first.room, first.typists.map((m) => m.displayName), first.count], ["typing", ["bob"], 1]);
  assert.ok(first.expiresAfterMs > 0);
  // His message ends his typing for alice without a word from him.
  await bob.send("typing", "done");
  await until(() => heard.some((e) => e.type === "typing" && e.count === 0), "bob stopped");
  assert.deepEqual(told, [], "bob is never told of his own typing");
  await assert.rejects(bob.typing("elsewhere", true), { code: "NOT_A_MEMBER" });
});

test("after a server restart the client reconnects, rejoins and gets every message once, in order", { skip }, async () => {
  const s = await server({ store: "sqlite", env: AUTH });
  // The reader's token provider holds its reconnect back until the writer
  // has sent more: those arrive as the backlog of its rejoin, the rest live.
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let asked = 0;
  const reader = client(s, {
    token: async () => {
      if (++asked > 1) await gate;
      return s.token("reader", "Reader");
    },
    rooms: ["durable"],
    backoff: new Backoff(20, 100),
  });
  const readerInbox = inbox(reader);
  const events: ChatEvent[] = [];
  reader.on("*", (e) => events.push(e));
  await until(() => reader.lastSeen("durable") !== undefined, "the reader's join");
  const writer = client(s, { token: s.token("writer", "Writer"), rooms: ["durable"], backoff: new Backoff(20, 100) });
  await until(() => writer.lastSeen("durable") !== undefined, "the writer's join");
  for (let i = 1; i <= 5; i++) await writer.send("durable", `before ${i}`);
  await until(() => sequences(readerInbox.get("durable")).length === 5, "the first messages");

  await s.restart();
  for (let i = 1; i <= 5; i++) await writer.send("durable", `after ${i}`);
  assert.equal(reader.state, "connecting");
  release();
  await until(() => events.filter((e) => e.type === "rejoined").length === 2, "the reader's rejoin");
  for (let i = 1; i <= 5; i++) await writer.send("durable", `live ${i}`);
  await until(() => sequences(readerInbox.get("durable")).length >= 15, "every message");
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(sequences(readerInbox.get("durable")), upTo(15));
  const texts = (what: string) => [1, 2, 3, 4, 5].map((i) => `${what} ${i}`);
  assert.deepEqual(readerInbox.get("durable")!.map((m) => m.text), [...texts("before"), ...texts("after"), ...texts("live")]);

  const kinds = events.map((e) => e.type).filter((t) => t === "connected" || t === "rejoined" || t === "disconnected");
  assert.deepEqual(kinds, ["connected", "rejoined", "disconnected", "connected", "rejoined"]);
  assert.ok(events.some((e) => e.type === "reconnecting"));
  const rejoined = events.filter((e) => e.type === "rejoined").at(-1);
  assert.ok(rejoined?.type === "rejoined" && rejoined.ok);
  assert.equal(rejoined.result.backlogAfterSequence, 5n, "resumed after the last message seen");
  assert.equal(rejoined.result.latestSequence, 10n);
  assert.equal(rejoined.result.backlogIncomplete, false);
  // The backlog came right after the rejoin, before anything live.
  const afterRejoin = events.slice(events.indexOf(rejoined) + 1).filter((e) => e.type === "message");
  assert.deepEqual(afterRejoin.slice(0, 5).map((e) => (e.type === "message" ? e.message.text : "")), texts("after"));
  assert.equal(reader.lastSeen("durable"), 15n);
});

test("a server shutting down says so; the client reconnects when it is back", { skip }, async () => {
  const s = await server();
  const c = client(s, { name: "graceful", rooms: ["lobby"], backoff: new Backoff(20, 100) });
  const events: ChatEvent[] = [];
  c.on("*", (e) => events.push(e));
  await until(() => c.lastSeen("lobby") !== undefined, "the join");
  await s.restart("SIGTERM");
  await until(() => events.filter((e) => e.type === "rejoined").length === 2, "the rejoin");
  const disconnected = events.find((e) => e.type === "disconnected");
  assert.ok(disconnected?.type === "disconnected");
  assert.equal(disconnected.notice?.reason, DisconnectReason.SHUTTING_DOWN, disconnected.reason);
  assert.deepEqual(await c.rooms(), ["lobby"]);
});

test("the heartbeat keeps an idle session open past the server's idle timeout", { skip }, async () => {
  const s = await server({ env: { CHAT_SESSION__IDLE_TIMEOUT: "1500ms" } });
  const c = client(s, { name: "idle" });
  const disconnects: ChatEvent[] = [];
  c.on("disconnected", (e) => disconnects.push(e));
  const welcome = await c.waitConnected();
  assert.equal(welcome.idleTimeoutMs, 1500);
  await new Promise((r) => setTimeout(r, 4_000));
  assert.deepEqual(disconnects, []);
  assert.equal(c.state, "connected");
});

test("a send retried across a reconnect is stored once, and a retry with its id gets the original ack", { skip }, async () => {
  const s = await server();
  const sender = client(s, { name: "sender", rooms: ["once"], backoff: new Backoff(20, 100) });
  const watcher = client(s, { name: "watcher", rooms: ["once"] });
  const watcherInbox = inbox(watcher);
  const disconnects: ChatEvent[] = [];
  sender.on("disconnected", (e) => disconnects.push(e));
  await until(() => sender.lastSeen("once") !== undefined && watcher.lastSeen("once") !== undefined, "both joins");

  // The request goes out, then the session is dropped before the reply can
  // be read: the send is retried on the next session with the same id.
  const sending = sender.send("once", "exactly once", { clientMessageId: "retry-me-1" });
  sender.reconnect();
  const ack = await sending;
  assert.equal(disconnects.length, 1, "the send spanned a reconnect");
  assert.equal(ack.clientMessageId, "retry-me-1");
  const again = await sender.send("once", "exactly once", { clientMessageId: "retry-me-1" });
  assert.equal(again.sequence, ack.sequence);
  assert.equal(again.messageId, ack.messageId);

  await sender.send("once", "after");
  await until(() => sequences(watcherInbox.get("once")).length >= 2, "the watcher's messages");
  const stored = await watcher.history("once");
  assert.deepEqual(stored.messages.map((m) => m.text), ["exactly once", "after"]);
  assert.deepEqual(sequences(watcherInbox.get("once")), [1, 2]);
});

test("with authentication: a valid token connects; a refused fixed token stops the client", { skip }, async () => {
  const s = await server({ env: AUTH });
  let asked = 0;
  const good = client(s, {
    token: async () => {
      asked += 1;
      return s.token("alice", "Alice");
    },
  });
  const welcome = await good.waitConnected(10_000);
  assert.equal(welcome.you?.userId, "alice");
  assert.equal(welcome.you?.displayName, "Alice");
  assert.equal(asked, 1);

  const bad = client(s, { token: fixedToken("not-a-jwt") });
  const stopped = new Promise<ChatEvent>((resolve) => bad.on("stopped", resolve));
  const event = await stopped;
  assert.ok(event.type === "stopped");
  assert.equal(event.closeReason, "malformed");
  assert.equal(bad.state, "stopped");
  await assert.rejects(bad.join("lobby"), { code: "STOPPED" });
});
