// The chat screen's controller: it listens to the client library's events
// and keeps the rooms (messages keyed by room and sequence, members,
// presence lines, gaps) and the views in step — the room list, the room
// shown with its history (the first page when it opens, older ones when
// the reader scrolls up or presses "Load older messages"), the member
// list, notifications and the connection indicator. Joining and leaving
// are requests through the library, which also rejoins every room after a
// reconnect from the last sequence it saw, so the page only has to avoid
// showing twice what it already shows.

import { ChatError, type ChatClient, type EventOf, type proto } from "@chat/client";
import { Composer } from "./composer.js";
import { TypingView } from "./typing-view.js";
import { byId, el } from "./dom.js";
import { describe, loadGap, loadOlder } from "./history.js";
import { MessagesView } from "./messages-view.js";
import { Room, isChange, type Gap } from "./room.js";
import { MembersView, RoomsView } from "./sidebar-view.js";
import { ConnectionView, NoticesView } from "./status-view.js";

/** What the chat tells the page around it. */
export interface ChatHooks {
  /** A session opened (`first`: the first one of this sign-in). */
  connected(welcome: proto.Welcome, first: boolean): void;
  /** Before any session opened, an attempt failed; the library tries again. */
  unreachable(reason: string): void;
  /**
   * The client stopped for good: the server refused the credentials (close
   * code 4401), or ended the session for good (`closeReason` "disconnected").
   */
  stopped(reason: string, closeReason: string): void;
  /** The rooms or the room shown changed (so that a reload reopens them). */
  changed(rooms: string[], current: string | undefined): void;
}

/** Room names the server accepts: 1 to 64 of A-Z a-z 0-9 `_` `.` `-`. */
const ROOM_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** Scrolled this close to the top (px), the next older page is loaded. */
const LOAD_OLDER_PX = 64;
/** Announcements kept in the live region. */
const MAX_ANNOUNCED = 5;
/** How often the room shown is marked read at most. */
const MARK_READ_EVERY_MS = 1_000;
/** The most recent direct conversations joined at sign-in. */
const DIRECTS_JOINED = 20;

/** The chat screen of one signed-in client. */
export class Chat {
  /** The rooms, in the order they were joined. */
  private readonly rooms = new Map<string, Room>();
  /** The room shown. */
  private current: string | undefined;
  /** Who the server took the user to be. */
  private you: proto.Member | undefined;
  /** Whether a session has opened before (the next one is "back"). */
  private hadSession = false;
  /** Per room, the sequence last marked read from this page. */
  private readonly marked = new Map<string, bigint>();
  /** The pending second mark of `markShownRead` (undefined: none due). */
  private markTimer: ReturnType<typeof setTimeout> | undefined;
  /** Removes the library event handlers. */
  private readonly unsubscribe: (() => void)[] = [];
  /** The message list of the room shown. */
  private readonly messages: MessagesView;
  /** The message box and the sends in flight. */
  private readonly composer: Composer;
  /** Who is typing in the room shown. */
  private readonly typing = new TypingView(byId("typing", HTMLElement));
  /** The room list. */
  private readonly roomList: RoomsView;
  /** The member list of the room shown. */
  private readonly members = new MembersView();
  /** The connection indicator. */
  private readonly connection = new ConnectionView();
  /** The notifications strip. */
  private readonly notices = new NoticesView();
  /** The scrolling message area (scrolling up loads older messages). */
  private readonly scroller = byId("scroller", HTMLElement);
  /** The "Load older messages" button (the keyboard's way to scroll up for more). */
  private readonly older = byId("older", HTMLButtonElement);
  /** Where history paging stands, in words. */
  private readonly historyState = byId("history-state", HTMLElement);
  /** The live region that reads new messages out. */
  private readonly announcer = byId("announcer", HTMLElement);
  /** Join and leave failures. */
  private readonly joinError = byId("join-error", HTMLElement);
  /** Where a refused "Message a user" is explained. */
  private readonly directError = byId("direct-error", HTMLElement);
  /** Page-wide listeners, removed by `dispose`. */
  private readonly listeners = new AbortController();

  constructor(
    private readonly client: ChatClient,
    private readonly hooks: ChatHooks,
    rooms: string[],
    preferred: string | undefined,
  ) {
    const viewer = {
      userId: "",
      loadGap: (room: string, gap: Gap) => void this.fillGap(room, gap),
      edit: (message: proto.MessageEvent) => this.composer.startEdit(message),
      remove: (message: proto.MessageEvent) => void this.remove(message),
      react: (message: proto.MessageEvent, emoji: string, add: boolean) => void this.react(message, emoji, add),
    };
    this.messages = new MessagesView(byId("messages", HTMLOListElement), this.scroller, viewer);
    this.composer = new Composer(client, this.messages, this.listeners.signal);
    this.roomList = new RoomsView({ open: (room) => this.open(room), leave: (room) => void this.leave(room) });
    for (const name of rooms) this.rooms.set(name, new Room(name));
    this.listen(viewer);
    this.connection.show("connecting");
    this.open(preferred !== undefined && this.rooms.has(preferred) ? preferred : rooms[0]);
  }

  /** Wires the library's events and the page's controls. */
  private listen(viewer: { userId: string }): void {
    const c = this.client;
    this.unsubscribe.push(
      c.on("connected", ({ welcome }) => {
        viewer.userId = welcome.you?.userId ?? "";
        this.onConnected(welcome);
      }),
      c.on("rejoined", (event) => this.onRejoined(event)),
      c.on("message", ({ message }) => this.onMessage(message)),
      c.on("membersChanged", ({ room, joined, left, memberCount }) => this.onPresence(room, joined, left, memberCount)),
      // From a server older than membersChanged.
      c.on("memberJoined", ({ room, member }) => this.onPresence(room, [member], [], 0)),
      c.on("memberLeft", ({ room, member }) => this.onPresence(room, [], [member], 0)),
      c.on("notification", ({ notification }) => this.notices.add(notification)),
      c.on("readReceipts", ({ room, positions }) => this.onReadReceipts(room, positions)),
      c.on("directOpened", ({ conversation }) => this.onDirect(conversation, false)),
      c.on("removed", ({ room, reason }) => this.onRemoved(room, reason)),
      c.on("typing", (event) => {
        if (this.rooms.has(event.room)) this.typing.on(event, this.you?.userId);
      }),
      c.on("disconnected", ({ notice, reason }) => this.connection.show("reconnecting", notice?.message || reason)),
      c.on("reconnecting", (event) => this.onReconnecting(event)),
      c.on("stopped", ({ reason, closeReason }) => {
        this.connection.show("stopped", reason);
        this.hooks.stopped(reason, closeReason);
      }),
    );
    const signal = this.listeners.signal;
    this.scroller.addEventListener("scroll", () => this.onScroll(), { signal });
    document.addEventListener("visibilitychange", () => this.markShownRead(), { signal });
    this.older.addEventListener("click", () => void this.showOlder(), { signal });
    byId("join-form", HTMLFormElement).addEventListener("submit", (event) => this.onJoinSubmit(event), { signal });
    byId("direct-form", HTMLFormElement).addEventListener("submit", (event) => this.onDirectSubmit(event), { signal });
  }

  /** Stops listening (signing out); the caller closes the client. */
  dispose(): void {
    if (this.markTimer !== undefined) clearTimeout(this.markTimer);
    for (const off of this.unsubscribe) off();
    this.listeners.abort();
    this.notices.clear();
    this.typing.clear();
    this.messages.showNothing();
  }

  private onConnected(welcome: proto.Welcome): void {
    this.you = welcome.you;
    byId("me-name", HTMLElement).textContent = welcome.you?.displayName ?? "";
    const first = !this.hadSession;
    this.connection.show(first ? "connected" : "back");
    this.hadSession = true;
    this.hooks.connected(welcome, first);
    if (first) void this.loadDirects();
    this.renderSide();
  }

  private onReconnecting(event: EventOf<"reconnecting">): void {
    const wait = `attempt ${event.attempt}, next in ${(event.delayMs / 1000).toFixed(1)} s`;
    if (!this.hadSession) {
      this.connection.show("connecting", wait);
      this.hooks.unreachable(event.reason);
    } else {
      this.connection.show("reconnecting", wait);
    }
  }

  /** A room joined on a new session (the sign-in's rooms, and every room after a reconnect). */
  private onRejoined(event: EventOf<"rejoined">): void {
    const room = this.rooms.get(event.room);
    if (room === undefined) return;
    if (!event.ok) {
      // The library gave the room up (the server will never accept it): so does the page.
      if (!this.client.joinedRooms().includes(event.room)) {
        this.joinError.textContent = `Could not join ${event.room}: ${describe(event.error)}`;
        this.drop(event.room);
      }
      return;
    }
    const result = event.result;
    this.readState(room, result.unreadCount, result.latestSequence);
    if (result.sequenceReset) {
      // The server's numbering of the room went back: what it holds now
      // (the backlog that follows) replaces what the page showed.
      room.reset();
      room.note("The server's store of this room was reset; the messages below are what it holds now.");
      if (this.current === room.name) this.messages.show(room);
    }
    room.setMembers(result.members, result.memberCount);
    if (result.latestSequence > room.latest) room.latest = result.latestSequence;
    if (result.backlogIncomplete && result.backlogAfterSequence > room.newest()) {
      room.gaps.push({ after: room.newest(), upTo: result.backlogAfterSequence });
      if (this.current === room.name) this.messages.refreshGaps(room);
    }
    if (this.current === room.name) {
      this.members.render(room, this.you);
      if (!room.opened) void this.showOlder();
      void this.fillMembers(room);
    }
  }

  private onMessage(message: proto.MessageEvent): void {
    const room = this.rooms.get(message.room);
    if (room === undefined || !room.add(message)) return;
    if (isChange(message)) {
      // An edit or a delete: shown on its message, not as one.
      if (this.current === room.name) this.showChanges(room, [message]);
      return;
    }
    this.typing.sent(message.room, message.sender?.userId ?? "");
    if (message.sender?.userId === this.you?.userId) this.composer.arrived(message.clientMessageId);
    if (this.current === room.name) {
      this.messages.addMessage(message);
      // "No messages yet" no longer holds.
      if (room.size === 1) this.renderHistoryState();
      if (message.sender?.userId !== this.you?.userId) {
        this.announce(`${message.sender?.displayName ?? "?"}: ${message.text}`);
      }
    } else if (message.sender?.userId !== this.you?.userId && message.sequence > room.unreadFrom) {
      room.unread += 1;
      this.renderSide();
    }
    if (this.current === room.name) this.markShownRead();
  }

  /** What a join said of the room's unread messages: shown in the room list until the room is. */
  private readState(room: Room, unread: number, latest: bigint): void {
    // The server's count covers the room up to `latest`: what a resume
    // delivers up to there is not counted again.
    room.unreadFrom = latest;
    if (this.current === room.name) {
      this.markShownRead();
      return;
    }
    room.unread = unread;
    this.renderSide();
  }

  /** This user read a room in another session (or this one): nothing up to there is unread. */
  private onReadReceipts(name: string, positions: proto.ReadPosition[]): void {
    const room = this.rooms.get(name);
    const mine = positions.find((p) => p.member?.userId === this.you?.userId);
    if (room === undefined || mine === undefined) return;
    if (mine.sequence >= (this.client.lastSeen(name) ?? 0n) && room.unread > 0) {
      room.unread = 0;
      this.renderSide();
    }
  }

  /**
   * Marks the room shown read up to the last message the client has there
   * (while the page is visible):
   * at once, then at most once a second (the server allows a few marks a
   * second); never waited for, and a refusal only means the next one tries.
   */
  private markShownRead(): void {
    if (this.markTimer !== undefined) return;
    const mark = (): void => {
      const name = this.current;
      const seen = name === undefined ? undefined : this.client.lastSeen(name);
      // A page in a hidden tab is not being read.
      if (document.visibilityState === "hidden") return;
      if (name === undefined || seen === undefined || seen <= (this.marked.get(name) ?? 0n)) return;
      this.marked.set(name, seen);
      this.client.markRead(name, seen).catch(() => this.marked.delete(name));
    };
    mark();
    this.markTimer = setTimeout(() => {
      this.markTimer = undefined;
      mark();
    }, MARK_READ_EVERY_MS);
  }

  private onPresence(name: string, joined: proto.Member[], left: proto.Member[], count: number): void {
    const room = this.rooms.get(name);
    if (room === undefined) return;
    const changed = room.changeMembers(joined, left, count);
    // The user's own arrival is the join itself: no line for it. A crowd
    // arriving at once is one line.
    const others = (members: proto.Member[]) => members.filter((m) => m.userId !== this.you?.userId).map((m) => m.displayName);
    const line = (names: string[], verb: string) =>
      names.length === 0 ? undefined : room.note(`${names.length > 3 ? `${names.slice(0, 3).join(", ")} and ${names.length - 3} others` : names.join(", ")} ${verb}`);
    const notes = [line(others(changed.joined), "joined"), line(others(changed.left), "left")];
    if (this.current === name) {
      for (const note of notes) if (note !== undefined) this.messages.addNote(note);
      this.members.render(room, this.you);
    }
  }

  /** Shows `name` (undefined: no room): its messages, members, and its first history page the first time. */
  open(name: string | undefined): void {
    const room = name === undefined ? undefined : this.rooms.get(name);
    this.current = room?.name;
    byId("room-title", HTMLElement).textContent = room === undefined ? "No room: join one" : room.label;
    if (room === undefined) this.messages.showNothing();
    else {
      room.unread = 0;
      this.messages.show(room);
      this.markShownRead();
    }
    this.composer.target(room?.name);
    this.typing.show(room?.name);
    this.renderSide();
    this.renderHistoryState();
    this.hooks.changed([...this.rooms.keys()], this.current);
    if (room !== undefined && !room.opened && this.client.state === "connected") void this.showOlder();
    if (room !== undefined) void this.fillMembers(room);
  }

  /**
   * A join lists a big room's first members only: the room shown gets the
   * rest (one page of up to 1000; presence events keep it current after).
   */
  private async fillMembers(room: Room): Promise<void> {
    if (room.memberCount <= room.members.size || room.memberCount > 1000 || this.client.state !== "connected") return;
    try {
      const page = await this.client.membersPage(room.name, "", 1000);
      // The reply comes in order with presence events: it is the list as of now.
      room.setMembers(page.members, page.memberCount);
      if (this.current === room.name) this.members.render(room, this.you);
    } catch {
      // Not a member any more, or the connection went: the first page stays.
    }
  }

  /** Loads the page above the oldest message of the room shown (the latest page the first time). */
  private async showOlder(): Promise<void> {
    const room = this.current === undefined ? undefined : this.rooms.get(this.current);
    if (room === undefined || room.loading || (room.opened && !room.olderExist)) return;
    this.historyState.textContent = "Loading…";
    const loaded = await loadOlder(this.client, room);
    if (this.messages.shows(room.name)) {
      this.messages.addOlder(loaded.added);
      this.showChanges(room, loaded.added);
    }
    this.renderHistoryState(loaded.error);
  }

  private async fillGap(name: string, gap: Gap): Promise<void> {
    const room = this.rooms.get(name);
    if (room === undefined) return;
    const loaded = await loadGap(this.client, room, gap);
    if (!this.messages.shows(name)) return;
    for (const message of loaded.added) this.messages.addMessage(message);
    this.showChanges(room, loaded.added);
    this.messages.refreshGaps(room);
    if (loaded.error !== undefined) this.historyState.textContent = `Could not load the missed messages: ${loaded.error}`;
  }

  /** Loads older messages when the reader scrolls near the top. */
  private onScroll(): void {
    if (this.scroller.scrollTop > LOAD_OLDER_PX) return;
    const room = this.current === undefined ? undefined : this.rooms.get(this.current);
    if (room !== undefined && room.opened && room.olderExist && !room.loading) void this.showOlder();
  }

  /** The "Load older messages" button and the words beside it. */
  private renderHistoryState(error?: string): void {
    const room = this.current === undefined ? undefined : this.rooms.get(this.current);
    const done = room !== undefined && room.opened && !room.olderExist;
    this.older.hidden = room === undefined || done;
    if (error !== undefined) this.historyState.textContent = `Could not load the history: ${error}`;
    else if (room === undefined) this.historyState.textContent = "";
    else if (done) {
      this.historyState.textContent = room.oldest() === undefined ? `No messages in #${room.name} yet.` : `The beginning of #${room.name}.`;
    } else this.historyState.textContent = "";
  }

  private onJoinSubmit(event: SubmitEvent): void {
    event.preventDefault();
    const input = byId("join-room", HTMLInputElement);
    const name = input.value.trim();
    this.joinError.textContent = "";
    if (!ROOM_NAME.test(name)) {
      this.joinError.textContent = "A room name is 1 to 64 letters, digits, or _ . -";
      input.focus();
      return;
    }
    input.value = "";
    if (this.rooms.has(name)) return this.open(name);
    void this.join(name);
  }

  /** Joins `name` and shows it (`show`), or only lists it. */
  private async join(name: string, show = true, label?: string): Promise<void> {
    const room = new Room(name);
    if (label !== undefined) room.label = label;
    this.rooms.set(name, room);
    try {
      try {
        const result = await this.client.join(name);
        this.readState(room, result.unreadCount, result.latestSequence);
        room.setMembers(result.members, result.memberCount);
        if (result.latestSequence > room.latest) room.latest = result.latestSequence;
      } catch (error) {
        // Joined already by this client (opening a direct conversation joins it).
        if (!(error instanceof ChatError) || error.code !== "ALREADY_A_MEMBER") throw error;
        room.setMembers(await this.client.members(name));
      }
      if (show) this.open(name);
      else this.renderSide();
    } catch (error) {
      this.rooms.delete(name);
      this.joinError.textContent = `Could not join ${label ?? name}: ${describe(error)}`;
    }
  }

  /** "Message a user": opens the direct conversation with that user id and shows it. */
  private onDirectSubmit(event: SubmitEvent): void {
    event.preventDefault();
    const input = byId("direct-user", HTMLInputElement);
    const userId = input.value.trim();
    this.directError.textContent = "";
    if (userId === "") return;
    this.client.openDirect(userId).then(
      (conversation) => {
        input.value = "";
        this.onDirect(conversation, true);
      },
      (error: unknown) => {
        this.directError.textContent = `Could not open a conversation with ${userId}: ${describe(error)}`;
      },
    );
  }

  /** A direct conversation of the user: listed as `@` and the other user, joined, and shown if the user opened it here. */
  private onDirect(conversation: proto.DirectConversation, show: boolean): void {
    const label = `@${conversation.peer?.displayName ?? "?"}`;
    const room = this.rooms.get(conversation.room);
    if (room !== undefined) {
      room.label = label;
      if (show) this.open(room.name);
      else this.renderSide();
      return;
    }
    void this.join(conversation.room, show, label);
  }

  /** Lists (and joins) the user's most recent direct conversations, once signed in. */
  private async loadDirects(): Promise<void> {
    try {
      for (const conversation of (await this.client.listDirect()).slice(0, DIRECTS_JOINED)) {
        this.onDirect(conversation, false);
      }
    } catch {
      // Not listed now: each conversation still comes as it is opened.
    }
  }

  /** Leaves `name`; shows another room if it was the one shown. */
  private async leave(name: string): Promise<void> {
    this.joinError.textContent = "";
    try {
      await this.client.leave(name);
    } catch (error) {
      if (this.client.joinedRooms().includes(name)) {
        this.joinError.textContent = `Could not leave ${name}: ${describe(error)}`;
        return;
      }
    }
    this.drop(name);
  }

  /** An application removed the user from `room`: it goes, and a notice says why. */
  private onRemoved(room: string, reason: string): void {
    if (!this.rooms.has(room)) return;
    const text = `You were removed from ${room}: ${reason}`;
    this.notices.add({ text, serverTimeUnixMs: BigInt(Date.now()) } as proto.Notification);
    this.drop(room);
  }

  /** Forgets room `name`. */
  private drop(name: string): void {
    this.rooms.delete(name);
    this.composer.forget(name);
    this.typing.forget(name);
    if (this.current === name) this.open(this.rooms.keys().next().value);
    else {
      this.renderSide();
      this.hooks.changed([...this.rooms.keys()], this.current);
    }
  }

  private renderSide(): void {
    this.roomList.render([...this.rooms.values()], this.current);
    this.members.render(this.current === undefined ? undefined : this.rooms.get(this.current), this.you);
  }

  /** Says `text` through the live region (screen readers), keeping only the last few. */
  /** Draws again the messages of the room shown that the changes among `events` apply to. */
  private showChanges(room: Room, events: proto.MessageEvent[]): void {
    for (const event of events) {
      if (!isChange(event)) continue;
      const target = room.message(event.targetSequence);
      if (target !== undefined) this.messages.update(target);
    }
  }

  /** Adds or takes back the user's reaction to a message; a refusal is shown under the box. */
  private async react(message: proto.MessageEvent, emoji: string, add: boolean): Promise<void> {
    try {
      await this.client.react(message.room, message.sequence, emoji, add);
    } catch (error) {
      this.composer.showError(`Reaction not ${add ? "added" : "taken back"}: ${describe(error)}`);
    }
  }

  /** Takes back one of the user's messages (its Delete button); a refusal is shown under the box. */
  private async remove(message: proto.MessageEvent): Promise<void> {
    try {
      await this.client.delete(message.room, message.sequence);
    } catch (error) {
      this.composer.showError(`Not deleted: ${describe(error)}`);
      const room = this.rooms.get(message.room);
      if (room !== undefined && this.current === room.name) this.messages.update(message);
    }
  }

  private announce(text: string): void {
    this.announcer.append(el("p", { text }));
    while (this.announcer.children.length > MAX_ANNOUNCED) this.announcer.firstElementChild?.remove();
  }
}
