'use strict';
// The storm workloads of `chat-bench storm-join` / `storm-restart`, on the peer
// (../shared/peers/socketio: Socket.IO + Redis adapter; events `join` room -> ack {ok},
// `send` {room, text, clientTs} -> ack {ok}, broadcast `message`). The peer's own load.js
// puts one client in one room; here each client is in K rooms.
//
//   node peer-storm.js --mode join    --urls A,B --server-pids a,b --clients 200 --rooms-per-client 50 --rooms 100
//   node peer-storm.js --mode restart --urls A,B --server-pids a,b --clients 5000 --rooms-per-client 10 --rooms 500 \
//        --restart-cmd 'bash restart-peer.sh' --restart-pid-file peer.pid
//
// Needs socket.io-client (NODE_PATH=<peer folder>/node_modules). Prints one JSON line on
// stdout with chat-bench's field names (the store and presence fields null: the peer stores
// nothing and has no presence), progress and a `[peer-storm] result ...` line on stderr.
// Client i is in rooms (i*K + j) mod R, j < K, and connects to URL i mod U.
//
// join: connect every client, settle 1 s, then at t0 every client emits its K joins at once;
//   join_s = t0 -> the last ack; the servers' CPU (/proc/<pid>/stat, user and system) over it;
//   then 2 s, then a live phase (a few rooms, one sender each) for latency and delivery ratio.
// restart: clients alternate over A and B (socket.io-client reconnection on, its defaults); a
//   few senders on A post round-robin into every room at --rate; B is SIGKILLed, restarted by
//   --restart-cmd; B's clients reconnect and join their rooms again (the server forgot them);
//   resume_s = kill -> every B client has every room acked. The peer has no resume: messages
//   sent while a client was away are lost to it, and counted as lost (against the messages
//   the senders had acknowledged in that room).

const fs = require('fs');
const http = require('http');
const net = require('net');
const { spawn } = require('child_process');
const { io } = require('socket.io-client');

// ---------------------------------------------------------------- options
const OPTS = {
  mode: 'join', label: '', urls: 'http://127.0.0.1:3101,http://127.0.0.1:3102', 'server-pids': '',
  clients: '', 'rooms-per-client': '', rooms: '',
  'connect-concurrency': 100, 'connect-timeout': 20, 'phase-timeout': 60,
  'live-rooms': 10, 'live-rate': 1, 'live-s': 2,
  senders: 5, rate: 50, 'kill-after': 3, after: 3, drain: 10,
  'kill-pid': '', 'restart-cmd': '', 'restart-pid-file': '',
};
function parseArgs(argv) {
  const o = { ...OPTS };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (!a.startsWith('--')) throw new Error('unexpected ' + a);
    a = a.slice(2);
    let v;
    const eq = a.indexOf('=');
    if (eq >= 0) { v = a.slice(eq + 1); a = a.slice(0, eq); } else { v = argv[++i]; }
    if (!(a in OPTS)) throw new Error('unknown option --' + a);
    o[a] = v;
  }
  const restart = o.mode === 'restart';
  if (!['join', 'restart'].includes(o.mode)) throw new Error('--mode join|restart');
  const num = (k, def) => { const n = Number(o[k] === '' ? def : o[k]); if (!Number.isFinite(n) || n < 0) throw new Error('bad --' + k); return n; };
  const c = {
    mode: o.mode, label: o.label,
    urls: String(o.urls).split(',').filter(Boolean),
    serverPids: String(o['server-pids']).split(',').filter(Boolean).map(Number),
    clients: num('clients', restart ? 5000 : 200), k: num('rooms-per-client', restart ? 10 : 50),
    rooms: num('rooms', restart ? 500 : 100),
    concurrency: Math.max(1, num('connect-concurrency')), connectTimeoutMs: num('connect-timeout') * 1000,
    phaseMs: num('phase-timeout') * 1000,
    liveRooms: num('live-rooms'), liveRate: num('live-rate'), liveS: num('live-s'),
    senders: Math.max(1, num('senders')), rate: num('rate'), killAfterS: num('kill-after'),
    afterS: num('after'), drainS: num('drain'),
    killPid: o['kill-pid'] ? Number(o['kill-pid']) : 0,
    restartCmd: o['restart-cmd'], restartPidFile: o['restart-pid-file'],
  };
  if (c.urls.length === 0) throw new Error('no urls');
  if (c.clients < 1 || c.k < 1 || c.rooms < 1 || c.k > c.rooms) throw new Error('bad shape (K must be <= R)');
  if (restart && (c.urls.length !== 2 || c.serverPids.length !== 2 || !c.restartCmd)) {
    throw new Error('--mode restart needs --urls A,B, --server-pids a,b and --restart-cmd');
  }
  return c;
}

// ---------------------------------------------------------------- helpers
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const roomName = (r) => 'room-' + String(r).padStart(6, '0');
const roomsOf = (i, k, r) => Array.from({ length: k }, (_, j) => (i * k + j) % r);
const r3 = (x) => Math.round(x * 1000) / 1000;
const r2 = (x) => Math.round(x * 100) / 100;
const log = (...a) => console.error('[peer-storm]', ...a);
const CLK_TCK = 100; // the peer's run.sh checks getconf CLK_TCK

function cpuTimes(pid) { // {user_s, sys_s} of /proc/<pid>/stat, or null
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { user_s: Number(f[11]) / CLK_TCK, sys_s: Number(f[12]) / CLK_TCK };
  } catch { return null; }
}
function memMb(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => { const m = s.match(new RegExp('^' + k + ':\\s+(\\d+) kB', 'm')); return m ? Math.round(Number(m[1]) / 102.4) / 10 : null; };
    return { rss_mb_end: kb('VmRSS'), hwm_mb: kb('VmHWM') };
  } catch { return { rss_mb_end: null, hwm_mb: null }; }
}
function cpuWindow(a, b, wallMs) { // summed over processes; null if one is unreadable
  let user = 0, sys = 0, ok = a.length > 0;
  a.forEach((x, i) => { const y = b[i]; if (!x || !y) ok = false; else { user += y.user_s - x.user_s; sys += y.sys_s - x.sys_s; } });
  return { user_s: ok ? r3(user) : null, sys_s: ok ? r3(sys) : null, wall_s: r3(wallMs / 1000) };
}
function plusCpu(a, b) {
  const add = (x, y) => (x === null || y === null ? null : r3(x + y));
  return { user_s: add(a.user_s, b.user_s), sys_s: add(a.sys_s, b.sys_s), wall_s: Math.max(a.wall_s, b.wall_s) };
}
function perOp(cpu, ops) {
  const us = (s) => (s === null || ops === 0 ? null : r2(s * 1e6 / ops));
  return { user: us(cpu.user_s), sys: us(cpu.sys_s), total: cpu.user_s === null || cpu.sys_s === null ? null : us(cpu.user_s + cpu.sys_s) };
}
class Hist { // exact percentiles (the runs are small)
  constructor() { this.v = []; }
  record(ms) { this.v.push(ms > 0 ? ms : 0); }
  summary() {
    const v = this.v.slice().sort((a, b) => a - b), n = v.length;
    const p = (q) => (n ? r3(v[Math.min(n - 1, Math.ceil(q / 100 * n) - 1)]) : null);
    return { n, p50: p(50), p90: p(90), p99: p(99), p999: p(99.9), max: n ? r3(v[n - 1]) : null, mean: n ? r3(v.reduce((a, b) => a + b, 0) / n) : null };
  }
}
function httpStatus(url, path, timeoutMs) {
  return new Promise((resolve) => {
    const req = http.get(url + path, { timeout: timeoutMs }, (res) => { res.resume(); resolve(res.statusCode); });
    req.on('error', () => resolve(0));
    req.on('timeout', () => { req.destroy(); resolve(0); });
  });
}
function listening(url) { // whether something accepts TCP connections at url's host:port
  const u = new URL(url);
  return new Promise((resolve) => {
    const sock = net.connect({ host: u.hostname, port: Number(u.port) }, () => { sock.destroy(); resolve(true); });
    sock.on('error', () => resolve(false));
  });
}
function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([promise, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`${what} timed out after ${ms / 1000} s`)), ms); })])
    .finally(() => clearTimeout(t));
}
async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) { const i = next++; out[i] = await fn(items[i], i); }
  }));
  return out;
}
function connect(url, timeoutMs, reconnection) {
  return new Promise((resolve, reject) => {
    const s = io(url, { transports: ['websocket'], forceNew: true, reconnection, timeout: timeoutMs });
    const onErr = (e) => { s.close(); reject(e); };
    s.once('connect_error', onErr);
    s.once('connect', () => { s.off('connect_error', onErr); resolve(s); });
  });
}
function join(s, room, timeoutMs) { // resolves true on {ok:true}, false otherwise
  return new Promise((resolve) => {
    s.timeout(timeoutMs).emit('join', room, (err, resp) => resolve(!err && !!resp && resp.ok === true));
  });
}
const NOTES = 'socket.io peer: stores nothing and has no presence (store and presence fields null); ' +
  'no resume after a reconnect: a client rejoins its rooms and misses what was sent meanwhile';

function baseReport(c) {
  return {
    workload: c.mode === 'join' ? 'storm-join' : 'storm-restart', label: c.label, driver: 'socketio',
    time_utc: new Date().toISOString(),
    params: { clients: c.clients, rooms_per_client: c.k, rooms: c.rooms, members_per_room: r3(c.clients * c.k / c.rooms), urls: c.urls },
    connections: 0, connect_failed: 0, connect_errors: {}, connect_s: 0,
    joins: 0, join_failed: 0,
    presence_events_received: null, store_queries: null, store_queries_per_join: null,
    presence_frames_sent: null, pool_waits: null, pool_wait_s: null, pool_wait_max_le: null,
    slow_statements: null, notes: NOTES,
  };
}

async function connectAll(c, rep, urlOf, reconnection, n) {
  const t = nowMs();
  const socks = await withTimeout(mapLimit(Array.from({ length: n }, (_, i) => i), c.concurrency, async (i) => {
    try { return await connect(urlOf(i), c.connectTimeoutMs, reconnection); } catch (e) {
      rep.connect_failed++;
      const key = String(e && e.message || e).slice(0, 80);
      rep.connect_errors[key] = (rep.connect_errors[key] || 0) + 1;
      return null;
    }
  }), c.phaseMs, 'connect phase');
  rep.connect_s = r3((nowMs() - t) / 1000);
  rep.connections += socks.filter(Boolean).length;
  return socks;
}
function endServers(pids, rep) {
  rep.servers = pids.map((pid) => ({ pid, ...memMb(pid) }));
  const rss = rep.servers.map((s) => s.rss_mb_end);
  rep.server_rss_mb_end_total = rss.length && rss.every((x) => x !== null) ? Math.round(rss.reduce((a, b) => a + b, 0) * 10) / 10 : null;
}

// ---------------------------------------------------------------- join storm
async function joinStorm(c, rep, socks) {
  const live = { received: 0, lat: new Hist() };
  socks.forEach((s) => s && s.on('message', (m) => {
    if (m && typeof m.clientTs === 'number') { live.received++; live.lat.record(nowMs() - m.clientTs); }
  }));
  await sleep(1000);
  const cpu0 = c.serverPids.map(cpuTimes);
  const t0 = nowMs();
  const members = new Array(c.rooms).fill(0);
  const lat = new Hist();
  rep.join_errors = {};
  let last = t0;
  const all = [];
  socks.forEach((s, i) => {
    if (!s) return;
    for (const r of roomsOf(i, c.k, c.rooms)) {
      const asked = nowMs();
      all.push(join(s, roomName(r), c.phaseMs).then((ok) => {
        const done = nowMs();
        lat.record(done - asked);
        last = Math.max(last, done);
        if (ok) { rep.joins++; members[r]++; } else { rep.join_failed++; rep.join_errors['join failed or timed out'] = (rep.join_errors['join failed or timed out'] || 0) + 1; }
      }));
    }
  });
  log(`${all.length} joins emitted in ${(nowMs() - t0).toFixed(1)} ms`);
  await withTimeout(Promise.all(all), c.phaseMs, 'the join storm');
  const cpu1 = c.serverPids.map(cpuTimes);
  rep.join_s = r3((last - t0) / 1000);
  rep.join_latency_ms = lat.summary();
  rep.server_cpu_join = cpuWindow(cpu0, cpu1, last - t0);
  rep.cpu_us_per_join = perOp(rep.server_cpu_join, rep.joins);
  rep.redis_cpu_s_join = null;
  log(`${rep.joins} joins (${rep.join_failed} failed) in ${rep.join_s} s; settling 2 s`);
  await sleep(Math.max(0, last + 2000 - nowMs()));

  // live phase: a few rooms spread over the range, one member sending in each
  const nLive = Math.min(c.liveRooms, c.rooms);
  const senders = [];
  for (let j = 0; j < nLive; j++) {
    const r = Math.floor(j * c.rooms / nLive), i = Math.floor(r / c.k);
    if (i < socks.length && socks[i]) senders.push([r, socks[i]]);
  }
  const out = { sent: 0, acked: 0, deliveries_expected: 0, deliveries_received: 0, delivery_ratio: null };
  let expected = 0;
  const perRoom = Math.round(c.liveRate * c.liveS);
  for (let seq = 0; seq < perRoom; seq++) {
    for (const [r, s] of senders) {
      out.sent++;
      s.emit('send', { room: roomName(r), text: 'live', clientTs: nowMs() }, (resp) => {
        if (resp && resp.ok === true) { out.acked++; expected += members[r]; }
      });
    }
    await sleep(1000 / Math.max(c.liveRate, 1e-3));
  }
  const deadline = nowMs() + 5000;
  while (nowMs() < deadline && !(out.acked >= out.sent && live.received >= expected)) await sleep(20);
  out.deliveries_expected = expected;
  out.deliveries_received = live.received;
  out.delivery_ratio = expected > 0 ? Math.round(live.received / expected * 1e6) / 1e6 : null;
  out.latency_ms = live.lat.summary();
  rep.live = out;
  endServers(c.serverPids, rep);
}

// ---------------------------------------------------------------- restart storm
async function restartStorm(c, rep, socks, senderSocks, phase) {
  const st = {
    killed: false, storm: false, resumed: 0, resumedLast: 0, rejoins: 0, rejoinFailed: 0,
    latA: new Hist(), latStorm: new Hist(), latB: new Hist(), disconnects: 0,
  };
  // per client: room -> received message numbers
  const seen = socks.map(() => new Map());
  socks.forEach((s, i) => {
    if (!s) return;
    const onB = i % 2 === 1, rooms = roomsOf(i, c.k, c.rooms);
    s.on('message', (m) => {
      if (!m || typeof m.clientTs !== 'number') return;
      const ms = nowMs() - m.clientTs;
      if (onB) st.latB.record(ms); else { st.latA.record(ms); if (st.storm) st.latStorm.record(ms); }
      const n = Number(String(m.text).split(':')[1]);
      const list = seen[i].get(m.room);
      if (list) list.push(n); else seen[i].set(m.room, [n]);
    });
    s.on('disconnect', () => { st.disconnects++; });
    // After the kill: a new connection joins every room again (the restarted server knows none).
    s.on('connect', async () => {
      if (!st.killed) return;
      const oks = await Promise.all(rooms.map((r) => join(s, roomName(r), c.phaseMs)));
      oks.forEach((ok) => { if (ok) st.rejoins++; else st.rejoinFailed++; });
      if (oks.every(Boolean) && !s.resumedOnce) { s.resumedOnce = true; st.resumed++; st.resumedLast = nowMs(); }
    });
  });
  // the initial joins
  phase.name = 'join';
  const tj = nowMs();
  const initial = await withTimeout(mapLimit(socks.map((s, i) => [s, i]), c.concurrency, async ([s, i]) => {
    if (!s) return [0, 0];
    const oks = await Promise.all(roomsOf(i, c.k, c.rooms).map((r) => join(s, roomName(r), c.phaseMs)));
    return [oks.filter(Boolean).length, oks.filter((x) => !x).length];
  }), c.phaseMs, 'the join phase');
  const senderRooms = senderSocks.map((s, j) => Array.from({ length: c.rooms }, (_, r) => r).filter((r) => r % c.senders === j));
  const senderJoins = await Promise.all(senderSocks.map((s, j) => (s ? Promise.all(senderRooms[j].map((r) => join(s, roomName(r), c.phaseMs))) : [])));
  for (const [ok, bad] of initial) { rep.joins += ok; rep.join_failed += bad; }
  for (const oks of senderJoins) { rep.joins += oks.filter(Boolean).length; rep.join_failed += oks.filter((x) => !x).length; }
  rep.initial_join_s = r3((nowMs() - tj) / 1000);
  rep.b_clients = socks.filter((s, i) => s && i % 2 === 1).length;
  log(`${rep.joins} joins (${rep.join_failed} failed) in ${rep.initial_join_s} s`);

  // the steady sender
  phase.name = 'traffic';
  await sleep(1000);
  const counter = new Array(c.rooms).fill(0);
  const acked = Array.from({ length: c.rooms }, () => []);
  const live = { sent: 0, acked: 0, failed: 0 };
  let stop = false;
  const sending = (async () => {
    const t0 = nowMs(), interval = 1000 / c.rate;
    for (let k = 0; !stop; k++) {
      const r = k % c.rooms, s = senderSocks[r % c.senders];
      if (s) {
        const n = ++counter[r];
        live.sent++;
        s.emit('send', { room: roomName(r), text: `${r}:${n}`, clientTs: nowMs() }, (resp) => {
          if (resp && resp.ok === true) { live.acked++; acked[r].push(n); } else live.failed++;
        });
      }
      await sleep(Math.max(0, t0 + (k + 1) * interval - nowMs()));
    }
  })();
  await sleep(c.killAfterS * 1000);

  // kill B, restart it, wait for its clients
  phase.name = 'storm';
  const victim = c.killPid || c.serverPids[1];
  rep.killed_pid = victim;
  const cpuA0 = [cpuTimes(c.serverPids[0])];
  const kill = nowMs();
  st.killed = true; st.storm = true;
  try { process.kill(victim, 'SIGKILL'); } catch (e) { log('kill failed:', e.message); }
  for (let i = 0; i < 500; i++) { const t = cpuTimes(victim); let z = false; try { z = /\) Z /.test(fs.readFileSync(`/proc/${victim}/stat`, 'utf8')); } catch { z = true; } if (!t || z) break; await sleep(10); }
  // Until nothing listens on B's port (a dying process's threads may still hold it).
  for (let i = 0; i < 500 && await listening(c.urls[1]); i++) await sleep(10);
  if (c.restartPidFile) { try { fs.unlinkSync(c.restartPidFile); } catch { /* none yet */ } }
  await new Promise((resolve) => { const p = spawn('sh', ['-c', c.restartCmd], { stdio: 'ignore' }); p.on('exit', resolve); p.on('error', resolve); });
  let newPid = null;
  for (let i = 0; i < 500 && c.restartPidFile && !newPid; i++) {
    try { newPid = Number(fs.readFileSync(c.restartPidFile, 'utf8').trim()) || null; } catch { /* not yet */ }
    if (!newPid) await sleep(20);
  }
  rep.restarted_pid = newPid;
  let ready = null;
  for (const end = nowMs() + c.phaseMs; nowMs() < end;) {
    if (await httpStatus(c.urls[1], '/health', 1000) === 200) { ready = nowMs(); break; }
    await sleep(20);
  }
  const cpuB0 = [newPid ? cpuTimes(newPid) : null];
  log(`B ${ready ? 'ready' : 'NOT ready'} (pid ${newPid}) after ${r3(((ready || nowMs()) - kill) / 1000)} s; waiting for ${rep.b_clients} clients`);
  for (const end = nowMs() + c.phaseMs; nowMs() < end && st.resumed < rep.b_clients;) await sleep(10);
  const allResumed = st.resumed >= rep.b_clients;
  st.storm = false;
  const cpuA = cpuWindow(cpuA0, [cpuTimes(c.serverPids[0])], nowMs() - kill);
  const cpuB = ready && newPid ? cpuWindow(cpuB0, [cpuTimes(newPid)], nowMs() - ready) : { user_s: null, sys_s: null, wall_s: 0 };
  rep.restart_ready_s = ready ? r3((ready - kill) / 1000) : null;
  rep.resume_s = allResumed ? r3((Math.max(st.resumedLast, kill) - kill) / 1000) : null;
  rep.resume_after_ready_s = allResumed && ready ? r3((st.resumedLast - ready) / 1000) : null;
  rep.clients_resumed = st.resumed;
  rep.rejoins = st.rejoins;
  rep.rejoin_failed = st.rejoinFailed;
  rep.backlog_incomplete = null;
  rep.sequence_reset = null;
  rep.server_cpu_storm = plusCpu(cpuA, cpuB);
  rep.cpu_us_per_join = perOp(rep.server_cpu_storm, st.rejoins);

  phase.name = 'after';
  await sleep(c.afterS * 1000);
  stop = true;
  await sending;
  phase.name = 'drain';
  const check = () => { // per side: {clients, expected, lost, duplicated}
    const sides = [0, 1].map(() => ({ clients: 0, expected: 0, lost: 0, duplicated: 0 }));
    socks.forEach((s, i) => {
      if (!s) return;
      const side = sides[i % 2];
      side.clients++;
      for (const r of roomsOf(i, c.k, c.rooms)) {
        const got = seen[i].get(roomName(r)) || [];
        const set = new Set(got);
        side.duplicated += got.length - set.size;
        side.expected += acked[r].length;
        for (const n of acked[r]) if (!set.has(n)) side.lost++;
      }
    });
    return sides;
  };
  // The peer loses what B's clients missed for good: wait only for A's side and the acks.
  const drainEnd = nowMs() + c.drainS * 1000;
  while (nowMs() < drainEnd && !(live.acked + live.failed >= live.sent && check()[0].lost === 0)) await sleep(200);
  const [a, b] = check();
  rep.lost = a.lost + b.lost;
  rep.duplicated = a.duplicated + b.duplicated;
  rep.clients_checked = a.clients + b.clients;
  rep.check_a = a;
  rep.check_b = b;
  const expected = a.expected + b.expected, received = expected - rep.lost;
  rep.live = {
    sent: live.sent, acked: live.acked, failed: live.failed,
    deliveries_expected: expected, deliveries_received: received,
    delivery_ratio: expected > 0 ? Math.round(received / expected * 1e6) / 1e6 : null,
    latency_ms: st.latA.summary(), latency_storm_ms: st.latStorm.summary(), latency_b_ms: st.latB.summary(),
  };
  rep.disconnects = st.disconnects;
  endServers([c.serverPids[0], ...(newPid ? [newPid] : [])], rep);
  if (!ready) throw new Error(`instance B (${c.urls[1]}) did not come back`);
  if (!allResumed) throw new Error(`the resume timed out after ${c.phaseMs / 1000} s: ${st.resumed} of ${rep.b_clients} B clients rejoined`);
}

// ---------------------------------------------------------------- main
function oneLine(r) {
  const L = (r.live && r.live.latency_ms) || {};
  return `${r.label}: conns ${r.connections}, joins ${r.joins} (failed ${r.join_failed}), join ${r.join_s ?? '-'} s, ` +
    `rejoins ${r.rejoins ?? '-'}, resume ${r.resume_s ?? '-'} s (ready ${r.restart_ready_s ?? '-'} s), ` +
    `CPU µs/join user ${r.cpu_us_per_join ? r.cpu_us_per_join.user : '-'} sys ${r.cpu_us_per_join ? r.cpu_us_per_join.sys : '-'}, ` +
    `live p99 ${L.p99 ?? '-'} ms ratio ${r.live ? r.live.delivery_ratio : '-'}, lost ${r.lost ?? '-'} dup ${r.duplicated ?? '-'}` +
    (r.error ? `, ERROR ${r.error}` : '');
}

async function main() {
  const started = nowMs();
  let c;
  try { c = parseArgs(process.argv.slice(2)); } catch (e) { console.error('peer-storm:', e.message); process.exit(64); }
  const rep = baseReport(c);
  const phase = { name: 'connect' };
  let socks = [], senderSocks = [];
  const progress = setInterval(() => log(`${c.label} ${phase.name} connections=${rep.connections} joins=${rep.joins} rejoins=${rep.rejoins ?? '-'}`), 1000);
  try {
    if (c.mode === 'join') {
      socks = await connectAll(c, rep, (i) => c.urls[i % c.urls.length], false, c.clients);
      log(`connected ${rep.connections}/${c.clients} in ${rep.connect_s} s`);
      phase.name = 'join storm';
      await joinStorm(c, rep, socks);
    } else {
      socks = await connectAll(c, rep, (i) => c.urls[i % 2], true, c.clients);
      senderSocks = await connectAll(c, rep, () => c.urls[0], true, c.senders);
      log(`connected ${rep.connections} in ${rep.connect_s} s`);
      await restartStorm(c, rep, socks, senderSocks, phase);
    }
  } catch (e) {
    rep.error = String(e && e.message || e);
    log('ERROR', rep.error);
  }
  clearInterval(progress);
  for (const s of [...socks, ...senderSocks]) if (s) s.close();
  rep.total_wall_s = r3((nowMs() - started) / 1000);
  process.stdout.write(JSON.stringify(rep) + '\n');
  log('result', oneLine(rep));
  const failed = rep.error || rep.connect_failed > 0 || rep.join_failed > 0;
  // The peer's lost messages are its measured behaviour, not a failure of the run.
  process.exitCode = rep.error ? 2 : failed ? 1 : 0;
  setTimeout(() => process.exit(process.exitCode), 500).unref();
}

main();
