// Client message ids: random UUIDs (version 4), made with
// `crypto.getRandomValues`, which browsers offer on plain-HTTP pages too
// (unlike `crypto.randomUUID`).

/** A fresh random UUID, e.g. `1b4e28ba-2fa1-41d2-883f-0016d3cca427`. */
export function randomUuid(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
