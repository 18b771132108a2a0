// The page's own client message ids: chosen before a send goes out, so the
// page can recognise its message when it comes back (and the library
// retries it under the same id after a reconnect).

/** A fresh random UUID (version 4), from `crypto.getRandomValues` (available on plain-HTTP pages too). */
export function newMessageId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
