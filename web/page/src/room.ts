// One room as the page knows it: its numbered events keyed by sequence
// number (so one that arrives twice — live, in a resumed backlog and in a
// history page — is kept once), messages kept current by the edits and
// deletes that follow them, its members, the presence lines to show
// between messages, the holes a resume could not fill, and where its
// history paging stands.

import { proto } from "@chat/client";

/** A line about the room that is not a message ("bob joined"), shown after the message it followed. */
export interface Note {
  /** The room's latest sequence when it happened: the note is shown after that message. */
  after: bigint;
  /** What happened. */
  text: string;
  /** When the page saw it (local clock, ms). */
  atMs: number;
}

/** Messages a resume could not deliver: sequences after `after` up to and including `upTo`. */
export interface Gap {
  /** The last sequence the page had before the hole. */
  after: bigint;
  /** The last missing sequence. */
  upTo: bigint;
}

/** A room the page is in. */
export class Room {
  /** The room's name. */
  readonly name: string;
  /** How lists and the title show it: `# name`, or `@` and the other user for a direct conversation. */
  label: string;
  /** Messages by sequence: the key that makes each message shown once. */
  private readonly bySequence = new Map<bigint, proto.MessageEvent>();
  /** The sequences held, in increasing order. */
  private readonly sequences: bigint[] = [];
  /** Members by user id, as the last join told and presence events changed since (a big room's first page and the changes since). */
  readonly members = new Map<string, proto.Member>();
  /** How many members the room has, as the server last said (at least those in `members`). */
  memberCount = 0;
  /** Presence lines, in the order they happened. */
  readonly notes: Note[] = [];
  /** Holes left by a resume that could not deliver everything. */
  gaps: Gap[] = [];
  /** The highest sequence the page knows of (from joins and messages). */
  latest = 0n;
  /** Whether the first history page has been asked for (it is, the first time the room is shown). */
  opened = false;
  /** Whether older messages than the oldest held may exist. */
  olderExist = true;
  /** A history request is in flight. */
  loading = false;
  /** Messages that arrived while another room was shown. */
  unread = 0;
  /** Messages up to this sequence are in `unread` already (the join's count). */
  unreadFrom = 0n;
  /** Live changes to messages not held, by the message's sequence, in order (for a message that arrives after them). */
  private readonly changes = new Map<bigint, proto.MessageEvent[]>();

  constructor(name: string) {
    this.name = name;
    this.label = name.startsWith("dm.") ? "@…" : `# ${name}`;
  }

  /**
   * Adds `message` (a message, or a change to one) unless its sequence is
   * already held; returns whether it was new. A live change is applied to
   * the message it names, now if held, or when it arrives. From a history
   * page read when the room stood at `historyLatest`, a message already
   * holds every change up to there: only later live ones are applied to
   * it, and the page's own change rows are applied to nothing.
   */
  add(message: proto.MessageEvent, historyLatest?: bigint): boolean {
    const sequence = message.sequence;
    if (this.bySequence.has(sequence)) return false;
    this.bySequence.set(sequence, message);
    if (isChange(message)) {
      if (historyLatest === undefined) {
        const target = this.bySequence.get(message.targetSequence);
        if (target !== undefined) apply(target, message);
        else {
          const pending = this.changes.get(message.targetSequence) ?? [];
          // Bounded: a message is rarely changed this often before it shows.
          if (pending.length < 200) pending.push(message);
          this.changes.set(message.targetSequence, pending);
        }
      }
    } else {
      for (const change of this.changes.get(sequence) ?? []) {
        if (historyLatest === undefined || change.sequence > historyLatest) apply(message, change);
      }
      this.changes.delete(sequence);
    }
    let at = this.sequences.length;
    while (at > 0 && this.sequences[at - 1]! > sequence) at -= 1;
    this.sequences.splice(at, 0, sequence);
    if (sequence > this.latest) this.latest = sequence;
    if (sequence <= 1n) this.olderExist = false;
    this.gaps = this.gaps.filter((gap) => !this.filled(gap));
    return true;
  }

  /** Whether every message of `gap` is now held. */
  private filled(gap: Gap): boolean {
    for (let s = gap.after + 1n; s <= gap.upTo; s += 1n) if (!this.bySequence.has(s)) return false;
    return true;
  }

  /** The messages held (not the changes: those are applied to them), oldest first. */
  messages(): proto.MessageEvent[] {
    return this.sequences.map((s) => this.bySequence.get(s)!).filter((m) => !isChange(m));
  }

  /** The message (or change) with `sequence`, if held. */
  message(sequence: bigint): proto.MessageEvent | undefined {
    return this.bySequence.get(sequence);
  }

  /** How many messages are held. */
  get size(): number {
    return this.sequences.length;
  }

  /** The oldest sequence held (undefined when none). */
  oldest(): bigint | undefined {
    return this.sequences[0];
  }

  /** The newest sequence held, or 0. */
  newest(): bigint {
    return this.sequences[this.sequences.length - 1] ?? 0n;
  }

  /**
   * Forgets every message held: the server says the room's numbering went
   * back (its store was reset), so the old sequences name other messages.
   */
  reset(): void {
    this.bySequence.clear();
    this.changes.clear();
    this.sequences.length = 0;
    this.gaps = [];
    this.latest = 0n;
    this.olderExist = true;
  }

  /** Replaces the member list (a join's answer: all members, or the first page of `count`). */
  setMembers(members: proto.Member[], count = 0): void {
    this.members.clear();
    for (const member of members) this.members.set(member.userId, member);
    this.memberCount = Math.max(count, members.length);
  }

  /**
   * Applies a presence change (users who are members now, users who are not,
   * the room's count); returns the users whose presence it changed here.
   */
  changeMembers(joined: proto.Member[], left: proto.Member[], count: number): { joined: proto.Member[]; left: proto.Member[] } {
    const arrived = joined.filter((m) => !this.members.has(m.userId));
    const gone = left.filter((m) => this.members.has(m.userId));
    for (const member of joined) this.members.set(member.userId, member);
    for (const member of left) this.members.delete(member.userId);
    this.memberCount = Math.max(count, this.members.size);
    return { joined: arrived, left: gone };
  }

  /** Records a presence line after the latest known message; returns it. */
  note(text: string): Note {
    const note = { after: this.latest, text, atMs: Date.now() };
    this.notes.push(note);
    // A long-lived room keeps its most recent lines only.
    if (this.notes.length > 200) this.notes.shift();
    return note;
  }
}

/** Whether `event` is a change to an earlier message: an edit, a delete or a reaction. */
export function isChange(event: proto.MessageEvent): boolean {
  return event.kind !== proto.MessageKind.MESSAGE;
}

/**
 * Brings `message` up to `change`, unless it is already as new: a message
 * read from history after the change holds its result (and perhaps later
 * ones), which an older change must not undo.
 */
function apply(message: proto.MessageEvent, change: proto.MessageEvent): void {
  if (message.deleted) return;
  if (change.kind === proto.MessageKind.DELETE) {
    message.deleted = true;
    message.text = "";
    message.reactions = [];
  } else if (change.kind === proto.MessageKind.REACTION_ADDED || change.kind === proto.MessageKind.REACTION_REMOVED) {
    react(message, change.text, change.sender, change.kind === proto.MessageKind.REACTION_ADDED);
  } else if (change.kind === proto.MessageKind.EDIT && change.sequence > message.editedSequence) {
    // Edits in sequence order, never by clocks: one older than the text a
    // history page brought changes nothing.
    message.text = change.text;
    message.editedAtUnixMs = change.serverTimeUnixMs;
    message.editedSequence = change.sequence;
  }
}

/**
 * Adds (or takes back) `who`'s reaction `emoji` on `message`: a reactor
 * already listed is not counted twice (history lists the first 50 of
 * each emoji; one taken back beyond them still counts down).
 */
function react(message: proto.MessageEvent, emoji: string, who: proto.Member | undefined, add: boolean): void {
  const userId = who?.userId ?? "";
  const at = message.reactions.findIndex((r) => r.emoji === emoji);
  const reaction = message.reactions[at];
  if (reaction === undefined) {
    if (add && who !== undefined) {
      message.reactions.push({ $typeName: "chat.v1.Reaction", emoji, count: 1, members: [who] } as proto.Reaction);
    }
    return;
  }
  const listed = reaction.members.some((m) => m.userId === userId);
  if (add) {
    if (!listed && who !== undefined) {
      reaction.count += 1;
      reaction.members.push(who);
    }
    return;
  }
  if (listed || reaction.count > reaction.members.length) reaction.count -= 1;
  reaction.members = reaction.members.filter((m) => m.userId !== userId);
  if (reaction.count <= 0) message.reactions.splice(at, 1);
}

/** Members sorted by display name (then id), as lists show them. */
export function sortedMembers(room: Room): proto.Member[] {
  return [...room.members.values()].sort(
    (a, b) => a.displayName.localeCompare(b.displayName) || a.userId.localeCompare(b.userId),
  );
}
