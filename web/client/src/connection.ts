// The connection loop: sessions one after another until the client is
// closed or stopped. Each asks the token provider, opens a WebSocket,
// waits for the Welcome, goes live, rejoins the rooms and pings on the
// heartbeat until the session ends; then the loop reports the end, waits
// out the backoff (or longer, if the server asked: a notice's wait, or a
// refusal by its pace of new sessions) and tries again.

import { create } from "@bufbuild/protobuf";
import { ClientFrameSchema, PingRequestSchema, type Welcome } from "./gen/chat/v1/chat_pb.js";
import { dispatch } from "./dispatch.js";
import { planRejoins, rejoin } from "./rejoin.js";
import type { Live, Shared } from "./shared.js";
import { CLOSE_LIMITED, CLOSE_UNAUTHORIZED, Socket, subprotocols, type SessionEnd } from "./socket.js";
import { isFixedToken } from "./token.js";

/**
 * Refusal reasons (close code 4401) that the same credentials keep: with
 * no other credentials to offer, retrying cannot help. `key` (a rotated
 * signing key not loaded yet) and `not_yet_valid` (clocks disagree) may
 * pass later, and so may a refusal without a known reason.
 */
const REFUSED_FOR_GOOD = new Set([
  "missing",
  "malformed",
  "expired",
  "algorithm",
  "signature",
  "issuer",
  "audience",
  "claims",
  "name",
]);

/** Runs sessions until the client is closed or stopped, then ends the events. */
export async function run(shared: Shared): Promise<void> {
  let attempt = 0;
  for (;;) {
    shared.setState("connecting");
    const end = await session(shared);
    forgetSession(shared);
    if (end.established) {
      attempt = 0;
      shared.events.emit({ type: "disconnected", notice: end.notice, reason: end.reason });
    }
    if (!shared.closeRequested && refusedForGood(shared, end)) {
      shared.setState("stopped");
      shared.events.emit({ type: "stopped", reason: end.reason, closeReason: end.closeReason });
      break;
    }
    // Ended for good by an application: a person signs in again, the
    // client does not.
    if (!shared.closeRequested && end.notice?.stayDisconnected) {
      shared.setState("stopped");
      shared.events.emit({ type: "stopped", reason: end.notice.message || end.reason, closeReason: "disconnected" });
      break;
    }
    if (shared.closeRequested || !shared.settings.reconnect) break;
    attempt += 1;
    const delayMs = reconnectDelayMs(shared, attempt, end);
    shared.events.emit({ type: "reconnecting", attempt, delayMs, reason: end.reason });
    await shared.sleep(delayMs);
    if (shared.closeRequested) break;
  }
  if (shared.state !== "stopped") shared.setState("closed");
  shared.events.end();
}

/** Not connected from this moment: waiting requests fail, new ones fail fast. */
function forgetSession(shared: Shared): void {
  shared.live = undefined;
  shared.socket = undefined;
  shared.setState("connecting");
  shared.failPending("DISCONNECTED", "the connection was lost before the reply arrived");
}

/** Whether the server refused the credentials for good (see `REFUSED_FOR_GOOD`) and there are no others. */
function refusedForGood(shared: Shared, end: SessionEnd): boolean {
  const token = shared.settings.token;
  return (
    end.closeCode === CLOSE_UNAUTHORIZED &&
    REFUSED_FOR_GOOD.has(end.closeReason) &&
    (token === undefined || isFixedToken(token))
  );
}

/**
 * The wait before reconnect `attempt` (from 1) after `end`: the backoff's,
 * or longer if the server asked for it: the wait its notice named, or, when
 * it refused the session for its pace (close 4429, reason `rate:<ms>`), the
 * retry time stretched by a random share of itself (up to twice), so that
 * the clients it refused together do not return together.
 */
export function reconnectDelayMs(shared: Shared, attempt: number, end: SessionEnd): number {
  const { backoff } = shared.settings;
  let delay = Math.max(backoff.delayMs(attempt - 1), Math.min(end.notice?.reconnectAfterMs ?? 0, MAX_SERVER_WAIT_MS));
  const retryMs = paceRetryMs(end);
  if (retryMs > 0) delay = Math.max(delay, Math.min(retryMs, MAX_SERVER_WAIT_MS) * (1 + backoff.jitter()));
  return delay;
}

/** The longest wait taken from a server (a shutdown notice's, or a refusal for its pace); the Rust client's bound too. */
const MAX_SERVER_WAIT_MS = 60_000;

/** The retry time of a refusal by the server's pace of new sessions (0 for any other end). */
export function paceRetryMs(end: SessionEnd): number {
  if (end.closeCode !== CLOSE_LIMITED) return 0;
  const match = /^rate:(\d{1,9})$/.exec(end.closeReason);
  return match === null ? 0 : Number(match[1]);
}

/** One session: credentials, handshake, Welcome, then live until it ends. */
async function session(shared: Shared): Promise<SessionEnd> {
  const { settings } = shared;
  let token: string | undefined;
  if (settings.token !== undefined) {
    try {
      token = await Promise.race([settings.token(), shared.closing.then(() => undefined)]);
    } catch (error) {
      return ended(`no token: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  if (shared.closeRequested) return ended("closed by the client");
  const socket = new Socket(settings.WebSocket, settings.url, subprotocols(token, settings.name), settings.connectTimeoutMs, {
    onFrame: (frame) => dispatch(shared, frame),
  });
  shared.socket = socket;
  const welcome = await socket.welcome;
  if ("reason" in welcome) return welcome;
  const live = goLive(shared, socket, welcome);
  const heartbeat = startHeartbeat(shared, live);
  const end = await socket.ended;
  clearInterval(heartbeat);
  return end;
}

/** A session that never went live, ended by `reason`. */
function ended(reason: string): SessionEnd {
  return { reason, notice: undefined, established: false, closeCode: 0, closeReason: "" };
}

/**
 * Makes the open session the current one: requests go out on it, the
 * state says connected, the application hears `connected`, and the rooms
 * are rejoined (their replies arrive through `dispatch`).
 */
function goLive(shared: Shared, socket: Socket, welcome: Welcome): Live {
  const live: Live = { socket, welcome, rejoining: new Map(), rejoined: new Set() };
  const done = planRejoins(shared, live);
  shared.live = live;
  shared.setState("connected");
  shared.events.emit({ type: "connected", welcome });
  void rejoin(shared, live, done);
  return live;
}

/**
 * Pings on the heartbeat (the server's idle timeout counts requests only)
 * and replaces a session from which nothing arrived for the heartbeat
 * timeout. The pongs are dropped: nobody waits for them.
 */
function startHeartbeat(shared: Shared, live: Live): ReturnType<typeof setInterval> {
  const { heartbeatTimeoutMs } = shared.settings;
  return setInterval(() => {
    if (Date.now() - live.socket.lastHeard > heartbeatTimeoutMs) {
      live.socket.end(`nothing heard from the server for ${heartbeatTimeoutMs} ms`, true);
      return;
    }
    const ping = create(PingRequestSchema, { clientTimeUnixMs: BigInt(Date.now()) });
    live.socket.send(create(ClientFrameSchema, { requestId: BigInt(shared.takeRequestId()), request: { case: "ping", value: ping } }));
  }, heartbeatPeriodMs(shared.settings.heartbeatIntervalMs, live.welcome));
}

/** How often to ping: the configured interval, or a third of the server's idle timeout if shorter (at least 10 ms). */
export function heartbeatPeriodMs(intervalMs: number, welcome: Welcome): number {
  let period = intervalMs;
  if (welcome.idleTimeoutMs > 0) period = Math.min(period, Math.floor(welcome.idleTimeoutMs / 3));
  return Math.max(period, 10);
}
