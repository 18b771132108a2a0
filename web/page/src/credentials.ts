// Who signs in, and where: the credentials and rooms of this tab kept in
// sessionStorage (so a reload signs in again and reopens the same rooms,
// and closing the tab forgets them), the last name used kept in
// localStorage to fill the form, and the WebSocket URL of the server that
// served the page.

/** What the sign-in form collected. */
export interface SignIn {
  /** The display name (servers without authentication); may be empty when a token is given. */
  name: string;
  /** The bearer token (servers with authentication); empty for none. */
  token: string;
  /** The rooms to be in, in order. */
  rooms: string[];
  /** The room shown, if any. */
  current: string | undefined;
}

/** sessionStorage key of this tab's sign-in. */
const SESSION_KEY = "chat.signin";
/** localStorage key of the last name used. */
const NAME_KEY = "chat.name";

/** `ws://host/v1/ws` (or `wss://` for a page served over https): the server that served the page. */
export function serverUrl(location: Location): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/ws`;
}

/** Room names as typed (separated by spaces or commas), without repeats. */
export function parseRooms(text: string): string[] {
  return [...new Set(text.split(/[\s,]+/).filter((room) => room !== ""))];
}

/** The sign-in this tab used last, if any. */
export function restore(): SignIn | undefined {
  try {
    const raw = sessionStorage.getItem(SESSION_KEY);
    if (raw === null) return undefined;
    const saved = JSON.parse(raw) as Partial<SignIn>;
    if (typeof saved.name !== "string" || typeof saved.token !== "string" || !Array.isArray(saved.rooms)) {
      return undefined;
    }
    const rooms = saved.rooms.filter((room): room is string => typeof room === "string");
    const current = typeof saved.current === "string" ? saved.current : undefined;
    return { name: saved.name, token: saved.token, rooms, current };
  } catch {
    return undefined;
  }
}

/** Keeps `signIn` for this tab (and its name for the form). */
export function save(signIn: SignIn): void {
  try {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(signIn));
    if (signIn.name !== "") localStorage.setItem(NAME_KEY, signIn.name);
  } catch {
    // Storage may be off (private windows, policies): the page works without it.
  }
}

/** Forgets this tab's sign-in (signing out). */
export function forget(): void {
  try {
    sessionStorage.removeItem(SESSION_KEY);
  } catch {
    // See `save`.
  }
}

/** The last name used in this browser, for the form. */
export function lastName(): string {
  try {
    return localStorage.getItem(NAME_KEY) ?? "";
  } catch {
    return "";
  }
}
