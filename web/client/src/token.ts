// Where a client gets its bearer token: a provider asked before every
// connection attempt, so that after a token expires (the server ends the
// session with AUTH_EXPIRED) the client reconnects with a fresh one. A
// fixed token is marked as such: once the server refuses it for a reason
// the same token keeps, retrying cannot help and the client stops.

/** A source of bearer tokens, asked before every connection attempt. */
export type TokenProvider = () => Promise<string>;

/** Marks the providers made by `fixedToken`. */
const FIXED = Symbol("chat.fixedToken");

/** A provider that always gives `token`. */
export function fixedToken(token: string): TokenProvider {
  const provider = (): Promise<string> => Promise.resolve(token);
  Object.defineProperty(provider, FIXED, { value: true });
  return provider;
}

/** Whether `provider` always gives the same token (made by `fixedToken`). */
export function isFixedToken(provider: TokenProvider): boolean {
  return (provider as unknown as Record<symbol, unknown>)[FIXED] === true;
}
