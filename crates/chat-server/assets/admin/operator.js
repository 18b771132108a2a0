// The operator's view of a running cluster (GET /admin/). No build step,
// no dependency, nothing from the internet: it asks for the admin
// credentials and reads, every two seconds, the endpoints any operator
// tool would:
//   GET /admin/status   this instance, and every instance it hears from
//                       (readiness, connections, rooms, counters)
//   GET /v1/api/rooms   rooms with their member counts (the server API)
//   GET /v1/api/rooms/{room}/members
//   GET /admin/errors   this instance's recent warnings and errors
//   POST /admin/broadcast
// Rates are the difference between two readings of each instance's
// counters. Everything from the server is written as text, never as HTML.
"use strict";

const POLL_MS = 2000;
/** A request without an answer by then is given up. */
const TIMEOUT_MS = 5000;
const SAMPLES = 60;
const TOKEN_KEY = "chat-operator-token";

const $ = (id) => document.getElementById(id);

/** The credentials, kept in this tab only. */
let token = sessionStorage.getItem(TOKEN_KEY) ?? "";
/** The next poll while signed in. */
let timer;
/** Bumped at each sign-in and sign-out: answers to an older one are dropped. */
let generation = 0;
/** Per instance: its last counters and when they were read. */
const last = new Map();
/** The cluster's message rate, oldest first. */
const rates = [];
/** The room whose members are shown. */
let shownRoom = null;

/** A request with the credentials; the parsed answer, or an Error with `.status`. */
async function call(method, path, body) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  if (!response.ok) {
    const reason = json?.error?.message ?? json?.error ?? json?.message ?? response.statusText;
    const error = new Error(`${response.status} ${reason}`);
    error.status = response.status;
    throw error;
  }
  return json;
}

function setState(state, text) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = text;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

function number(n) {
  return n === undefined || n === null ? "–" : Number(n).toLocaleString("en");
}

function rate(n) {
  return n === undefined ? "–" : n.toFixed(1);
}

/**
 * Messages and deliveries per second of `id` between its last two
 * readings. `at` is when the counters were read: now for this instance,
 * when its heartbeat was heard for the others (their counters change only
 * with a heartbeat, so a poll that sees the same heartbeat keeps the rate).
 */
function rates_of(id, counters, at) {
  if (counters.received === undefined) return {};
  const before = last.get(id);
  if (before && Math.abs(at - before.at) < 250) return before.rates;
  let rates = {};
  if (before && at > before.at) {
    const seconds = (at - before.at) / 1000;
    rates = {
      received: Math.max(0, counters.received - before.received) / seconds,
      delivered: Math.max(0, counters.delivered - before.delivered) / seconds,
    };
  }
  last.set(id, { ...counters, at, rates });
  return rates;
}

function renderInstances(status) {
  const now = Date.now();
  const rows = [
    {
      id: status.server_id,
      here: true,
      ready: status.status === "ready",
      connections: status.connections,
      rooms: status.rooms,
      received: status.messages_received,
      delivered: status.messages_delivered,
      backplane: status.backplane_counters ?? {},
      heard: "this instance",
      at: now,
    },
    ...status.instances.map((i) => ({
      id: i.server_id,
      here: false,
      ready: i.ready,
      connections: i.connections,
      rooms: i.rooms,
      received: i.messages_received,
      delivered: i.messages_delivered,
      backplane: i.backplane_counters ?? {},
      heard: `${(i.last_heard_ms / 1000).toFixed(1)} s ago`,
      at: now - i.last_heard_ms,
    })),
  ];
  const body = $("instances").tBodies[0];
  body.replaceChildren();
  let clusterReceived = 0;
  let clusterDelivered = 0;
  let known = false;
  for (const i of rows) {
    const r = rates_of(i.id, { received: i.received, delivered: i.delivered }, i.at);
    if (r.received !== undefined) {
      known = true;
      clusterReceived += r.received;
      clusterDelivered += r.delivered;
    }
    const row = document.createElement("tr");
    row.dataset.instance = i.id;
    const name = cell(row, i.id);
    if (i.here) name.append(" ", Object.assign(document.createElement("span"), { className: "hint", textContent: "(here)" }));
    const ready = cell(row, "");
    const mark = document.createElement("span");
    if (i.ready === undefined) {
      mark.textContent = "unknown";
    } else {
      mark.textContent = i.ready ? "ready" : "not ready";
      mark.className = i.ready ? "yes" : "no";
    }
    ready.append(mark);
    cell(row, number(i.connections), "number");
    cell(row, number(i.rooms), "number");
    cell(row, rate(r.received), "number");
    cell(row, rate(r.delivered), "number");
    cell(row, number(i.backplane.published), "number");
    cell(row, number(i.backplane.received), "number");
    cell(row, number(i.backplane.publish_failed), "number");
    cell(row, i.heard);
    body.append(row);
  }
  // Forget instances no longer heard.
  const ids = new Set(rows.map((i) => i.id));
  for (const id of last.keys()) if (!ids.has(id)) last.delete(id);
  if (known) {
    $("rate").textContent = clusterReceived.toFixed(1);
    $("deliveries").textContent = clusterDelivered.toFixed(1);
    rates.push(clusterReceived);
    if (rates.length > SAMPLES) rates.shift();
    drawSparkline();
  }
}

function drawSparkline() {
  const top = Math.max(1, ...rates);
  const step = 300 / (SAMPLES - 1);
  const offset = SAMPLES - rates.length;
  const points = rates.map((v, i) => `${((offset + i) * step).toFixed(1)},${(58 - (v / top) * 56).toFixed(1)}`);
  $("sparkline").querySelector("polyline").setAttribute("points", points.join(" "));
}

function renderRooms(answer) {
  const body = $("rooms").tBodies[0];
  body.replaceChildren();
  $("rooms-empty").hidden = answer.rooms.length > 0;
  for (const room of answer.rooms) {
    const row = document.createElement("tr");
    row.dataset.room = room.room;
    const name = document.createElement("button");
    name.type = "button";
    name.textContent = room.room;
    name.addEventListener("click", () => showMembers(room.room));
    const td = document.createElement("td");
    td.append(name);
    row.append(td);
    cell(row, number(room.members), "number");
    body.append(row);
  }
}

async function showMembers(room) {
  shownRoom = room;
  const mine = generation;
  try {
    const answer = await call("GET", `/v1/api/rooms/${encodeURIComponent(room)}/members`);
    if (shownRoom !== room || mine !== generation) return;
    $("members-title").textContent = `Members of ${room} (${answer.members.length})`;
    const list = $("members-list");
    list.replaceChildren(
      ...answer.members.map((m) => {
        const li = document.createElement("li");
        li.textContent = m.display_name === m.user_id ? m.user_id : `${m.display_name} (${m.user_id})`;
        return li;
      }),
    );
    $("members").hidden = false;
  } catch (e) {
    if (shownRoom !== room || mine !== generation) return;
    $("members-title").textContent = `Members of ${room}: ${e.message}`;
    $("members-list").replaceChildren();
    $("members").hidden = false;
  }
}

function renderErrors(answer) {
  const list = $("errors");
  list.replaceChildren(
    ...answer.errors.map((e) => {
      const li = document.createElement("li");
      li.className = `level-${e.level}`;
      li.textContent = `${new Date(e.time_unix_ms).toLocaleTimeString()} ${e.level} ${e.target}: ${e.text}`;
      return li;
    }),
  );
  $("errors-empty").hidden = answer.errors.length > 0;
}

/** One reading of everything; each part shown as soon as it is read, whatever the others do. */
async function refresh() {
  const mine = generation;
  const [status, rooms, errors] = await Promise.allSettled([
    call("GET", "/admin/status"),
    call("GET", "/v1/api/rooms?limit=100"),
    call("GET", "/admin/errors"),
  ]);
  if (mine !== generation) return;
  const refused = [status, rooms, errors].find((r) => r.status === "rejected" && (r.reason.status === 401 || r.reason.status === 403));
  if (refused) {
    signOut(`Refused: ${refused.reason.message}`);
    return;
  }
  if (rooms.status === "fulfilled") renderRooms(rooms.value);
  if (errors.status === "fulfilled") renderErrors(errors.value);
  if (shownRoom) showMembers(shownRoom);
  if (status.status === "fulfilled") {
    renderInstances(status.value);
    setState("connected", `Connected to ${status.value.server_id}`);
  } else {
    setState("error", `Cannot read the server: ${status.reason.message}`);
  }
  const failed = [rooms, errors].find((r) => r.status === "rejected");
  if (failed && status.status === "fulfilled") {
    setState("error", `Connected to ${status.value.server_id}; partly unreadable: ${failed.reason.message}`);
  }
}

/** Polls: the next reading starts once this one is done, never two at once. */
async function poll() {
  const mine = generation;
  await refresh();
  if (mine === generation) timer = setTimeout(poll, POLL_MS);
}

function signIn() {
  generation += 1;
  $("signin").hidden = true;
  $("dashboard").hidden = false;
  $("signout").hidden = false;
  setState("connecting", "Connecting…");
  clearTimeout(timer);
  poll();
}

function signOut(why) {
  generation += 1;
  clearTimeout(timer);
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  last.clear();
  rates.length = 0;
  $("dashboard").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  const status = $("signin-status");
  status.textContent = why ?? "";
  status.dataset.kind = why ? "error" : "";
  setState("signed-out", "Signed out");
  $("token").focus();
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  $("token").value = "";
  sessionStorage.setItem(TOKEN_KEY, token);
  signIn();
});

$("signout").addEventListener("click", () => signOut());

$("broadcast-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = $("broadcast-status");
  const text = $("broadcast-text").value.trim();
  if (!text) return;
  try {
    const answer = await call("POST", "/admin/broadcast", { text });
    status.textContent = `Sent: ${answer.delivered_locally} sessions here, and relayed to the other instances.`;
    status.dataset.kind = "ok";
    $("broadcast-text").value = "";
  } catch (e) {
    status.textContent = `Not sent: ${e.message}`;
    status.dataset.kind = "error";
  }
});

if (token) {
  signIn();
} else {
  $("token").focus();
}
