// Who sent a message: a person, or an application posting through the
// server API as one of its bots or as the system (docs/API.md). The server
// keeps those user ids (`system`, `bot:…`) from every client, so a client
// can mark such messages whatever their display name says.

/** What posted a message whose sender has `userId`, if an application did: "bot" or "system". */
export function applicationSender(userId: string): "bot" | "system" | undefined {
  const id = userId.toLowerCase();
  if (id === "system") return "system";
  if (id.startsWith("bot:")) return "bot";
  return undefined;
}
