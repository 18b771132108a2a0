// Times as the reader's clock shows them: the hour and minute for today's
// messages, with the day for older ones, and the full date and time for a
// tooltip and the `datetime` attribute.

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayAndClock = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
  hour: "2-digit",
  minute: "2-digit",
});
const full = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

/** How a time is shown: short text, a long description and the machine-readable value. */
export interface ShownTime {
  /** "14:02" today, "Mon 3 Nov, 14:02" on another day (in the reader's locale and time zone). */
  short: string;
  /** The full local date and time, for a tooltip. */
  long: string;
  /** ISO 8601 (UTC), for `<time datetime>`. */
  iso: string;
}

/** `unixMs` (the server's clock, milliseconds since 1970) as the reader's local time. */
export function shownTime(unixMs: bigint | number, now: Date = new Date()): ShownTime {
  const date = new Date(Number(unixMs));
  const today = date.toDateString() === now.toDateString();
  return {
    short: (today ? clock : dayAndClock).format(date),
    long: full.format(date),
    iso: date.toISOString(),
  };
}
