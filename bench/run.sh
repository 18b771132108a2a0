#!/usr/bin/env bash
# The benchmark, one command: chat-server under the peer benchmark's workloads
# (../shared/peers/socketio: scenarios A, B, C, D, D2x), driven by chat-bench.
#
#   cluster  two chat-server instances, Redis backplane (a private redis-server on a
#            free port) and one PostgreSQL store (a database created for each run and
#            dropped after it): A, B, C (saturation stepping), D, D2x
#   single   one instance on its embedded defaults (SQLite in a fresh temporary
#            folder, in-process backplane): A, B, D, labelled single-A, single-B, single-D
#
# Rows A-ws, C-ws, D-ws (and D2x-ws) run the same cluster workloads over the WebSocket
# transport (`/v1/ws` on the same listener) with chat-bench's lean WebSocket driver
# (`--driver ws`); `loopback-floor` measures once, right after the A rows, what the kernel
# alone charges per delivery (one write each) on this machine, for summary.md's CPU split.
# Every run gets fresh server processes; Redis stays up (as in the peer's run.sh).
# Periodic notifications are off (notifications.enabled = false): they would add
# deliveries nobody planned. Everything else is the servers' default configuration.
# Every process started here is stopped by its PID at the end, also on Ctrl-C.
# Results: bench/results/<UTC timestamp>/ (results.jsonl, summary.md, env.json, logs/),
# and bench/results/latest.
#
# Knobs (environment):
#   QUICK=1              smoke run: 3 s per scenario, C at 25 and 50 only, 1000/2000 idle connections
#   ONLY="A C"           scenarios to run, of A B C D D2x T (default: all but T)
#                        T: what typing costs the deliveries beside it, on the cluster:
#                        B-typing (B, every client also saying it types TYPING_RATE
#                        times a second), and T / T-typing (1 room x 1000 clients,
#                        2 senders @ 5 msg/s, without and with all 1000 typing)
#                        SJ (not by default): the join storm, `chat-bench storm-join` on the
#                        cluster: every client asks for all its rooms at once; SJ-200x50 (200
#                        clients x 50 of 100 rooms) and SJ-5000x10 (5000 x 10 of 500; QUICK:
#                        SJ-1000x10, 1000 x 10 of 100); time until every join is back, server CPU
#                        per join (user, system), presence events, the servers' store and
#                        presence counters, then a short live phase
#                        SR (not by default): the restart storm, `chat-bench storm-restart` on
#                        the cluster: 5000 clients x 10 of 500 rooms (QUICK: 1000 x 10 of 100),
#                        half on each instance, a sender on the first at 50 msg/s; the second
#                        instance is SIGKILLed and restarted (same command line, same log); time
#                        until every client of it has rejoined every room, lost and duplicated
#                        sequences, the first instance's delivery latency meanwhile
#   PEER_STORM=1         with SJ or SR: the same storms on the peer (two ../shared/peers/socketio
#                        server.js instances on the run's Redis, driven by bench/peer-storm.js; a
#                        copy of the peer's folder gets its npm packages); rows peer-SJ-*, peer-SR-*
#                        in peer-storm.jsonl, beside ours in summary.md's Storms table
#   TYPING_RATE=0.33     typing announcements per second per client in the T rows (a
#                        client repeats "typing" every 3 s while its user types)
#   TOPOLOGIES="cluster" topologies to run, of cluster single (default: both)
#   C_RATES=25,50,...    C's rate list in msg/s per sender (default: chat-bench's, 25 ... 2000)
#   C_DURATION=10        seconds per C step
#   PG_URL=postgres://postgres@127.0.0.1:5432   PostgreSQL server (no database) for the cluster runs
#   PEER=1               also run the peer (a copy of ../shared/peers/socketio in a temporary
#                        folder, its own run.sh; QUICK and SKIP_RAW are passed on) and put its
#                        rows beside ours in summary.md
#   PEER_DIR=...         where the peer's folder is (default: ../shared/peers/socketio)
#   SERVER_LOG_LEVEL     the servers' log.level (default: info, their default)
#   SKIP_BUILD=1         use the release binaries already built
#   SKIP_RAW=1           skip A-raw and C-raw: the same workloads with chat-bench's lean driver
#                        (`--driver raw`: less load-generator CPU), as the peer's run.sh has them
#   SKIP_WS=1            skip A-ws, C-ws, D-ws and D2x-ws (the WebSocket transport, `--driver ws`)
#   FLOOR_ROUNDS=300     loopback-floor's rounds (1,000 connections, 128 bytes, one write each)
#   TRACES=1             the servers export every request's spans over OTLP/gRPC to `otlp-sink`
#                        (chat-bench's counting collector, on a free port; its CPU is not the
#                        servers'), to measure what tracing costs; the summary says how many
#                        spans arrived. Off by default, as in the servers' default configuration.
#   TRACES_RATIO=1       with TRACES=1: the servers' traces.sample_ratio
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=${QUICK:-0}
ONLY=${ONLY:-A B C D D2x}
TYPING_RATE=${TYPING_RATE:-0.33}
TOPOLOGIES=${TOPOLOGIES:-cluster single}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PG_URL=${PG_URL%/}
PEER=${PEER:-0}
PEER_STORM=${PEER_STORM:-0}
PEER_DIR=${PEER_DIR:-$ROOT/../shared/peers/socketio}
SERVER_LOG_LEVEL=${SERVER_LOG_LEVEL:-info}
SKIP_BUILD=${SKIP_BUILD:-0}
SKIP_RAW=${SKIP_RAW:-0}
SKIP_WS=${SKIP_WS:-0}
FLOOR_ROUNDS=${FLOOR_ROUNDS:-300}
TRACES=${TRACES:-0}
TRACES_RATIO=${TRACES_RATIO:-1}
RUN_TIMEOUT=300 # seconds, per chat-bench run

if [ "$QUICK" = 1 ]; then
  D_AB=3; C_DURATION=${C_DURATION:-3}; C_RATES=${C_RATES:-25,50}; N_D=1000
else
  D_AB=20; C_DURATION=${C_DURATION:-10}; C_RATES=${C_RATES:-}; N_D=5000
fi
C_RATES=${C_RATES// /,}
# Storm shapes: "clients rooms-per-client rooms".
if [ "$QUICK" = 1 ]; then
  SJ_SHAPES=("200 50 100" "1000 10 100"); SR_SHAPE="1000 10 100"
else
  SJ_SHAPES=("200 50 100" "5000 10 500"); SR_SHAPE="5000 10 500"
fi

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$ROOT/bench/results/$TS"
mkdir -p "$OUT/logs"
RES="$OUT/results.jsonl"
: > "$RES"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chat-bench-run.XXXXXX")

log() { echo "[run.sh $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "$*"; exit 1; }
wanted() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
topology() { case " $TOPOLOGIES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# The servers read CHAT_* and chat-bench reads load.js's variables (ROOMS, RATE, ...):
# settings from the caller's shell must not change what is measured.
for v in $(compgen -e); do
  case $v in
    CHAT_* | OTEL_* | SCENARIO | ROOMS | CLIENTS_PER_ROOM | SENDERS_PER_ROOM | RATE | DURATION | URLS | \
      SERVER_PIDS | REDIS_PID | TEXT_BYTES | DRAIN | SETTLE | WORKERS | CONNECT_CONCURRENCY | \
      CONNECT_TIMEOUT | PHASE_TIMEOUT | DRIVER | LABEL)
      log "ignoring $v from the environment"; unset "$v" ;;
  esac
done

# ---------------------------------------------------------------- processes and cleanup
REDIS_PID=""; BENCH_PID=""; PEER_PID=""; SINK_PID=""; SRV_PIDS=(); DB=""; TRACES_ENV=()
PEER_SRV_PIDS=()
# A restarted instance (SR) is not this shell's child: its pid is in a file.
RESTARTED_PID_FILE="$WORK/restarted.pid"; PEER_RESTARTED_PID_FILE="$WORK/peer-restarted.pid"

stop_pid() { # stop_pid PID -> SIGTERM, wait up to 10 s, then SIGKILL
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  # Killed already (SR's SIGKILL) and not yet reaped: nothing to stop.
  if grep -qs '^State:.*Z' "/proc/$pid/status"; then wait "$pid" 2>/dev/null || true; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  log "pid $pid did not stop in 10 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -d "$PG_URL/postgres" "$@"; }
drop_db() {
  [ -n "$DB" ] || return 0
  psql_admin -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 ||
    log "could not drop database $DB"
  DB=""
}
stop_restarted() { # stop_restarted FILE: the process whose pid FILE holds, if any
  [ -n "$1" ] && [ -s "$1" ] || return 0
  stop_pid "$(cat "$1")"
  rm -f "$1"
}
stop_servers() {
  local pid
  for pid in "${SRV_PIDS[@]}"; do stop_pid "$pid"; done
  SRV_PIDS=()
  stop_restarted "$RESTARTED_PID_FILE"
  drop_db
}
stop_peer_servers() {
  local pid
  for pid in "${PEER_SRV_PIDS[@]}"; do stop_pid "$pid"; done
  PEER_SRV_PIDS=()
  stop_restarted "$PEER_RESTARTED_PID_FILE"
}
cleanup() {
  stop_pid "$BENCH_PID"; BENCH_PID=""
  stop_pid "$PEER_PID"; PEER_PID=""
  stop_servers
  stop_peer_servers
  stop_pid "$REDIS_PID"; REDIS_PID=""
  stop_pid "$SINK_PID"; SINK_PID=""
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
TAKEN=" "
free_port() { # free_port FROM -> PORT: the first port >= FROM that is free and not taken here
  PORT=$1
  while port_busy "$PORT" || [[ $TAKEN == *" $PORT "* ]]; do PORT=$((PORT + 1)); done
  TAKEN="$TAKEN$PORT "
}

# ---------------------------------------------------------------- preflight
for program in cargo curl ss; do command -v "$program" >/dev/null || die "$program not found"; done
if topology cluster; then
  for program in redis-server redis-cli psql; do
    command -v "$program" >/dev/null || die "$program not found (the cluster topology needs it)"
  done
  psql_admin -c 'select 1' >/dev/null || die "cannot reach PostgreSQL at $PG_URL (set PG_URL)"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 12000 ] ||
  log "warning: ulimit -n is $(ulimit -n); D2x needs 10,000 connections (and their file descriptors)"

if [ "$SKIP_BUILD" != 1 ]; then
  log "building release binaries"
  cargo build --release -p chat-server -p chat-bench --bins >&2
fi
TARGET=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  grep -o '"target_directory":"[^"]*"' | head -n 1 | cut -d'"' -f4)
SERVER="${TARGET:-$ROOT/target}/release/chat-server"
BENCH="${TARGET:-$ROOT/target}/release/chat-bench"
SINK="${TARGET:-$ROOT/target}/release/otlp-sink"
FLOOR="${TARGET:-$ROOT/target}/release/loopback-floor"
[ -x "$SERVER" ] && [ -x "$BENCH" ] || die "release binaries not found under ${TARGET:-$ROOT/target}/release"

# Everything shares this machine: say so when something else is already using it.
cpu_sample() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat; }
read -r T1 I1 < <(cpu_sample); sleep 2; read -r T2 I2 < <(cpu_sample)
BUSY_BEFORE=$(( T2 > T1 ? 100 * ((T2 - T1) - (I2 - I1)) / (T2 - T1) : 0 ))
[ "$BUSY_BEFORE" -lt 10 ] ||
  log "warning: the machine is already ${BUSY_BEFORE}% busy before the benchmark starts; figures will suffer"

free_port 15101; P1=$PORT
free_port $((P1 + 1)); P2=$PORT
log "results -> $OUT"

# ---------------------------------------------------------------- environment
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "${s//$'\n'/ }"; }
{
  echo "{"
  echo "  \"git_commit\": $(json_str "$(git rev-parse HEAD 2>/dev/null || echo unknown)"),"
  echo "  \"git_dirty\": $(if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then echo true; else echo false; fi),"
  echo "  \"rustc\": $(json_str "$(rustc --version 2>/dev/null || echo unknown)"),"
  echo "  \"chat_server\": $(json_str "$("$SERVER" --version 2>/dev/null || echo unknown)"),"
  echo "  \"redis_server\": $(json_str "$(redis-server --version 2>/dev/null || echo none)"),"
  echo "  \"postgres\": $(json_str "$(topology cluster && psql_admin -Atc 'show server_version' 2>/dev/null || echo none)"),"
  echo "  \"kernel\": $(json_str "$(uname -r)"),"
  echo "  \"cpu_model\": $(json_str "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"),"
  echo "  \"cores\": $(nproc),"
  echo "  \"mem_gb\": $(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo),"
  echo "  \"clk_tck\": $(json_str "$(getconf CLK_TCK)"),"
  echo "  \"ulimit_n\": $(json_str "$(ulimit -n)"),"
  echo "  \"busy_pct_before\": $BUSY_BEFORE,"
  echo "  \"quick\": $([ "$QUICK" = 1 ] && echo true || echo false),"
  echo "  \"only\": $(json_str "$ONLY"),"
  echo "  \"topologies\": $(json_str "$TOPOLOGIES"),"
  echo "  \"skip_ws\": $([ "$SKIP_WS" = 1 ] && echo true || echo false),"
  echo "  \"traces\": $([ "$TRACES" = 1 ] && echo true || echo false),"
  echo "  \"traces_ratio\": $(json_str "$TRACES_RATIO")"
  echo "}"
} > "$OUT/env.json"

# ---------------------------------------------------------------- redis (cluster only)
if topology cluster; then
  free_port 16390; REDIS_PORT=$PORT
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --logfile "$OUT/logs/redis.log" &
  REDIS_PID=$!
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || die "redis-server did not come up"
  log "redis pid $REDIS_PID on 127.0.0.1:$REDIS_PORT (private)"
fi

# ---------------------------------------------------------------- trace sink (TRACES=1)
if [ "$TRACES" = 1 ]; then
  [ -x "$SINK" ] || die "otlp-sink not found under ${TARGET:-$ROOT/target}/release"
  free_port 14317; SINK_PORT=$PORT
  "$SINK" "127.0.0.1:$SINK_PORT" > "$OUT/logs/otlp-sink.log" 2>&1 &
  SINK_PID=$!
  for _ in $(seq 100); do grep -q listening "$OUT/logs/otlp-sink.log" && break; sleep 0.1; done
  grep -q listening "$OUT/logs/otlp-sink.log" || die "otlp-sink did not come up"
  TRACES_ENV=(CHAT_TRACES__OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT"
    CHAT_TRACES__SAMPLE_RATIO="$TRACES_RATIO")
  log "servers export traces to otlp-sink (pid $SINK_PID) on 127.0.0.1:$SINK_PORT"
fi

# ---------------------------------------------------------------- servers
RUN_N=0
wait_up() { # wait_up PORT PID PATH TRIES: until GET PATH answers 2xx (TRIES × 0.1 s), while PID lives
  for _ in $(seq "$4"); do
    kill -0 "$2" 2>/dev/null || return 1
    curl -sf "http://127.0.0.1:$1$3" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
wait_ready() { wait_up "$1" "$2" /health/ready 300; } # wait_ready PORT PID
server_env() { # server_env PORT [VAR=VALUE ...]: the instance's environment, in SERVER_ENV
  local port=$1; shift
  # Rate and connection limits off: one load generator on one address
  # sends faster than a person (A: 50 msg/s from one client) and opens
  # 10,000 connections (D2x).
  SERVER_ENV=(CHAT_LISTEN="127.0.0.1:$port" CHAT_SERVER_ID="bench-$port"
    CHAT_NOTIFICATIONS__ENABLED=false CHAT_LOG__LEVEL="$SERVER_LOG_LEVEL"
    CHAT_LIMITS__SEND_RATE=0 CHAT_LIMITS__USER_SEND_RATE=0 CHAT_LIMITS__JOIN_RATE=0
    CHAT_LIMITS__USER_JOIN_RATE=0 CHAT_LIMITS__USER_HISTORY_RATE=0 CHAT_LIMITS__MAX_CONNECTIONS=0
    CHAT_LIMITS__MAX_CONNECTIONS_PER_ADDRESS=0 CHAT_LIMITS__MAX_CONNECTIONS_PER_USER=0
    CHAT_LIMITS__SESSION_RATE=0
    CHAT_SHUTDOWN__DRAIN_TIMEOUT=5s "${TRACES_ENV[@]}" "$@")
}
start_server() { # start_server LABEL PORT DIR [VAR=VALUE ...]: one instance, its pid in SRV_PIDS
  local label=$1 port=$2 dir=$3; shift 3
  server_env "$port" "$@"
  (cd "$dir" && exec env "${SERVER_ENV[@]}" "$SERVER") >> "$OUT/logs/$label.server-$port.log" 2>&1 &
  SRV_PIDS+=("$!")
  wait_ready "$port" "$!" || { log "$label: server on port $port did not become ready"; return 1; }
}
restart_script() { # restart_script FILE PIDFILE LOG DIR COMMAND...: a script that starts COMMAND
  # again in the background in DIR, appending to LOG, and writes its pid to PIDFILE (SR's
  # --restart-cmd; the process is stopped by stop_restarted)
  local file=$1 pidfile=$2 logfile=$3 dir=$4; shift 4
  {
    echo '#!/usr/bin/env bash'
    printf 'cd %q || exit 1\n' "$dir"
    printf '%q ' "$@"; printf '>> %q 2>&1 < /dev/null &\n' "$logfile"
    printf 'echo $! > %q\n' "$pidfile"
  } > "$file"
}
start_cluster() { # start_cluster LABEL: a fresh database, then two instances on it
  local label=$1
  DB="chat_bench_$(date -u +%Y%m%d%H%M%S)_$RUN_N"
  psql_admin -c "CREATE DATABASE \"$DB\"" >/dev/null || { DB=""; return 1; }
  local shared=(CHAT_BACKPLANE=redis CHAT_REDIS__URL="redis://127.0.0.1:$REDIS_PORT"
    CHAT_STORE__URL="$PG_URL/$DB")
  # SERVER_ENV_EXTRA: settings of the caller's for this experiment (after the defaults above).
  # shellcheck disable=SC2206
  [ -z "${SERVER_ENV_EXTRA:-}" ] || shared+=($SERVER_ENV_EXTRA)
  # One after the other: the first one migrates the fresh database.
  start_server "$label" "$P1" "$WORK" "${shared[@]}" &&
    start_server "$label" "$P2" "$WORK" "${shared[@]}" || return 1
  # SR restarts the second instance with this: its command line, its log.
  server_env "$P2" "${shared[@]}"
  restart_script "$WORK/restart-server.sh" "$RESTARTED_PID_FILE" "$OUT/logs/$label.server-$P2.log" \
    "$WORK" env "${SERVER_ENV[@]}" "$SERVER"
}
start_single() { # start_single LABEL: one instance, embedded defaults, in a fresh folder
  local label=$1 dir="$WORK/single-$RUN_N"
  mkdir -p "$dir"
  start_server "$label" "$P1" "$dir"
}

LAST=""; LAST_OK=0; FAILED=()
run_bench() { # run_bench cluster|single LABEL [chat-bench flags...]: one run, one line in $RES
  # (with SUB=storm-join or SUB=storm-restart: that chat-bench subcommand, told the servers' logs)
  local topo=$1 label=$2; shift 2
  RUN_N=$((RUN_N + 1))
  local urls pids broker=() rc=0 sub=() logs
  if ! "start_$topo" "$label"; then
    LAST="{\"label\":\"$label\",\"error\":\"servers failed to start (see logs/$label.server-*.log)\"}"
    echo "$LAST" >> "$RES"; stop_servers; LAST_OK=0; return 0
  fi
  if [ "$topo" = cluster ]; then
    urls="http://127.0.0.1:$P1,http://127.0.0.1:$P2"; broker=(--redis-pid "$REDIS_PID")
  else
    urls="http://127.0.0.1:$P1"
  fi
  pids=$(IFS=,; echo "${SRV_PIDS[*]}")
  if [ -n "${SUB:-}" ]; then
    logs="$OUT/logs/$label.server-$P1.log"
    [ "$topo" != cluster ] || logs="$logs,$OUT/logs/$label.server-$P2.log"
    sub=("$SUB" --server-logs "$logs")
  fi
  timeout -k 10 "$RUN_TIMEOUT" "$BENCH" "${sub[@]}" --label "$label" --urls "$urls" --server-pids "$pids" \
    "${broker[@]}" "$@" > "$WORK/run.json" 2> "$OUT/logs/$label.bench.log" &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  LAST=$(tail -n 1 "$WORK/run.json")
  [ -n "$LAST" ] || LAST="{\"label\":\"$label\",\"error\":\"chat-bench produced no output (exit $rc)\"}"
  echo "$LAST" >> "$RES"
  # The servers' own view of the run (store, backplane and delivery
  # latency histograms), for finding where the time went.
  local port
  for port in "$P1" "$P2"; do
    curl -sf "http://127.0.0.1:$port/metrics" > "$OUT/logs/$label.metrics-$port.txt" 2>/dev/null ||
      rm -f "$OUT/logs/$label.metrics-$port.txt"
  done
  stop_servers
  local line
  line=$(grep -a '^\[chat-bench\] result ' "$OUT/logs/$label.bench.log" | tail -n 1 || true)
  log "${line:-$label: no result (exit $rc)}"
  if [ "$rc" != 0 ]; then
    LAST_OK=0
    grep -a '^chat-bench: ' "$OUT/logs/$label.bench.log" | tail -n 2 >&2 || true
  else
    LAST_OK=1
  fi
}
run_checked() { # run_checked ...: run_bench, and remember a failed run
  run_bench "$@"
  [ "$LAST_OK" = 1 ] || FAILED+=("$2")
}

saturate() { # saturate PREFIX [chat-bench flags...]: C's stepping, labels PREFIX-RATE
  local prefix=$1 step rate rates=(); shift
  [ -z "$C_RATES" ] || rates=(--rates "$C_RATES")
  for step in $(seq 40); do
    rate=$("$BENCH" step "$RES" --prefix "$prefix" "${rates[@]}") || die "chat-bench step failed"
    [ -n "$rate" ] || break
    log "$prefix step $step: rate $rate msg/s (offered $((rate * 1000)) deliveries/s), ${C_DURATION}s"
    run_bench cluster "$prefix-$rate" --scenario C --rate "$rate" --duration "$C_DURATION" "$@"
    "$BENCH" pass "$LAST" | sed 's/^/[run.sh] SLO /' >&2 || true
  done
}

FLOOR_DONE=0
run_floor() { # run_floor: loopback-floor once per benchmark run, one line in floor.jsonl
  [ "$FLOOR_DONE" = 0 ] || return 0
  FLOOR_DONE=1
  if [ ! -x "$FLOOR" ]; then log "loopback-floor not found under ${TARGET:-$ROOT/target}/release; no floor row"; return 0; fi
  log "loopback-floor: 1000 connections x $FLOOR_ROUNDS rounds, 128 bytes, one write per delivery"
  local line
  if line=$(timeout -k 5 120 "$FLOOR" --connections 1000 --rounds "$FLOOR_ROUNDS" --bytes 128 2>> "$OUT/logs/loopback-floor.log"); then
    echo "$line" >> "$OUT/floor.jsonl"
    log "loopback-floor: $line"
  else
    log "loopback-floor failed (see logs/loopback-floor.log)"
    FAILED+=(loopback-floor)
  fi
}

# ---------------------------------------------------------------- the peer's storms (PEER_STORM=1)
PEER_STORM_DIR=""
peer_prepare() { # a copy of the peer's folder with its npm packages, in PEER_STORM_DIR
  [ -z "$PEER_STORM_DIR" ] || return 0
  [ -f "$PEER_DIR/server.js" ] || { log "no peer at $PEER_DIR"; return 1; }
  command -v node >/dev/null || { log "node not found"; return 1; }
  PEER_STORM_DIR="$WORK/peer-storm"
  mkdir -p "$PEER_STORM_DIR"
  cp -r "$PEER_DIR/." "$PEER_STORM_DIR/"
  rm -rf "$PEER_STORM_DIR/results" "$PEER_STORM_DIR/run"
  if [ ! -d "$PEER_STORM_DIR/node_modules/socket.io-client" ]; then
    log "peer: npm ci in a copy of $PEER_DIR"
    (cd "$PEER_STORM_DIR" && npm ci --no-audit --no-fund) > "$OUT/logs/peer-npm.log" 2>&1 ||
      { log "peer: npm ci failed (see logs/peer-npm.log)"; PEER_STORM_DIR=""; return 1; }
  fi
}
wait_peer() { wait_up "$1" "$2" /health 100; } # wait_peer PORT PID
start_peer() { # start_peer LABEL: two peer instances on the run's Redis, pids in PEER_SRV_PIDS
  local label=$1 port pid
  for port in "$PP1" "$PP2"; do
    (cd "$PEER_STORM_DIR" && exec node server.js "$port" "redis://127.0.0.1:$REDIS_PORT") \
      >> "$OUT/logs/$label.peer-$port.log" 2>&1 &
    pid=$!
    PEER_SRV_PIDS+=("$pid")
    wait_peer "$port" "$pid" || { log "$label: peer on port $port did not come up"; return 1; }
  done
  restart_script "$WORK/restart-peer.sh" "$PEER_RESTARTED_PID_FILE" "$OUT/logs/$label.peer-$PP2.log" \
    "$PEER_STORM_DIR" node server.js "$PP2" "redis://127.0.0.1:$REDIS_PORT"
}
run_peer_storm() { # run_peer_storm LABEL [peer-storm.js flags...]: one line in peer-storm.jsonl
  local label=$1 rc=0 line pids; shift
  if ! start_peer "$label"; then
    echo "{\"label\":\"$label\",\"error\":\"peer servers failed to start\"}" >> "$OUT/peer-storm.jsonl"
    stop_peer_servers; FAILED+=("$label"); return 0
  fi
  pids=$(IFS=,; echo "${PEER_SRV_PIDS[*]}")
  timeout -k 10 "$RUN_TIMEOUT" env NODE_PATH="$PEER_STORM_DIR/node_modules" node "$ROOT/bench/peer-storm.js" \
    --label "$label" --urls "http://127.0.0.1:$PP1,http://127.0.0.1:$PP2" --server-pids "$pids" \
    "$@" > "$WORK/peer-run.json" 2> "$OUT/logs/$label.bench.log" &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  line=$(tail -n 1 "$WORK/peer-run.json")
  [ -n "$line" ] || line="{\"label\":\"$label\",\"error\":\"peer-storm.js produced no output (exit $rc)\"}"
  echo "$line" >> "$OUT/peer-storm.jsonl"
  stop_peer_servers
  log "$(grep -a '^\[peer-storm\] result ' "$OUT/logs/$label.bench.log" | tail -n 1 || echo "$label: no result (exit $rc)")"
  [ "$rc" = 0 ] || FAILED+=("$label")
}
peer_storms() { # the storms of ONLY on the peer
  peer_prepare || { FAILED+=(peer-storm); return 0; }
  free_port 13101; PP1=$PORT
  free_port $((PP1 + 1)); PP2=$PORT
  local shape n k r
  if wanted SJ; then
    for shape in "${SJ_SHAPES[@]}"; do
      read -r n k r <<< "$shape"
      run_peer_storm "peer-SJ-${n}x$k" --mode join --clients "$n" --rooms-per-client "$k" --rooms "$r"
    done
  fi
  if wanted SR; then
    read -r n k r <<< "$SR_SHAPE"
    run_peer_storm "peer-SR-${n}x$k" --mode restart --clients "$n" --rooms-per-client "$k" --rooms "$r" \
      --restart-cmd "bash $WORK/restart-peer.sh" --restart-pid-file "$PEER_RESTARTED_PID_FILE"
  fi
}

# ---------------------------------------------------------------- cluster
if topology cluster; then
  log "cluster: 2 instances, Redis backplane (pid $REDIS_PID), PostgreSQL store (fresh database per run)"
  if wanted A; then
    log "A: 1 room x 1000 clients, 1 sender @ 50 msg/s, ${D_AB}s"
    run_checked cluster A --scenario A --duration "$D_AB"
    [ "$SKIP_RAW" = 1 ] || run_checked cluster A-raw --scenario A --duration "$D_AB" --driver raw
    [ "$SKIP_WS" = 1 ] || run_checked cluster A-ws --scenario A --duration "$D_AB" --driver ws
    run_floor
  fi
  if wanted B; then
    log "B: 100 rooms x 10 clients, 2 senders/room @ 5 msg/s, ${D_AB}s"
    run_checked cluster B --scenario B --duration "$D_AB"
  fi
  if wanted C; then
    saturate C
    [ "$SKIP_RAW" = 1 ] || saturate C-raw --driver raw
    [ "$SKIP_WS" = 1 ] || saturate C-ws --driver ws
  fi
  if wanted D; then
    log "D: $N_D idle connections in $((N_D / 10)) rooms"
    run_checked cluster D --scenario D --rooms $((N_D / 10))
    [ "$SKIP_WS" = 1 ] || run_checked cluster D-ws --scenario D --rooms $((N_D / 10)) --driver ws
  fi
  if wanted D2x; then
    log "D2x: $((N_D * 2)) idle connections in $((N_D / 5)) rooms"
    run_checked cluster D2x --scenario D2x --rooms $((N_D / 5))
    [ "$SKIP_WS" = 1 ] || run_checked cluster D2x-ws --scenario D2x --rooms $((N_D / 5)) --driver ws
  fi
  if wanted T; then
    log "T: typing beside the messages, every client @ $TYPING_RATE/s: B-typing, then 1 room x 1000 clients without (T) and with (T-typing)"
    run_checked cluster B-typing --scenario B --duration "$D_AB" --typing-rate "$TYPING_RATE"
    crowd=(--rooms 1 --clients-per-room 1000 --senders-per-room 2 --rate 5 --duration "$D_AB")
    run_checked cluster T "${crowd[@]}"
    run_checked cluster T-typing "${crowd[@]}" --typing-rate "$TYPING_RATE"
  fi
  if wanted SJ; then
    log "SJ: join storms, every client joining all its rooms at once: ${SJ_SHAPES[*]}"
    for shape in "${SJ_SHAPES[@]}"; do
      read -r n k r <<< "$shape"
      SUB=storm-join run_checked cluster "SJ-${n}x$k" --clients "$n" --rooms-per-client "$k" --rooms "$r"
    done
  fi
  if wanted SR; then
    read -r n k r <<< "$SR_SHAPE"
    log "SR: restart storm, $n clients x $k of $r rooms, the second instance killed and restarted"
    SUB=storm-restart run_checked cluster "SR-${n}x$k" --clients "$n" --rooms-per-client "$k" --rooms "$r" \
      --restart-cmd "bash $WORK/restart-server.sh" --restart-pid-file "$RESTARTED_PID_FILE"
  fi
  if [ "$PEER_STORM" = 1 ] && { wanted SJ || wanted SR; }; then peer_storms; fi
  stop_pid "$REDIS_PID"; REDIS_PID=""
fi

# ---------------------------------------------------------------- single
if topology single; then
  log "single: 1 instance, embedded defaults (SQLite in a fresh folder, in-process backplane)"
  if wanted A; then run_checked single single-A --scenario A --duration "$D_AB"; run_floor; fi
  if wanted B; then run_checked single single-B --scenario B --duration "$D_AB"; fi
  if wanted D; then run_checked single single-D --scenario D --rooms $((N_D / 10)); fi
fi

# ---------------------------------------------------------------- the peer
PEER_ARGS=()
if [ "$PEER" = 1 ]; then
  [ -f "$PEER_DIR/run.sh" ] || die "no peer benchmark at $PEER_DIR"
  PEER_DIR=$(cd "$PEER_DIR" && pwd)
  log "peer: running a copy of $PEER_DIR (its own run.sh, QUICK=$QUICK)"
  mkdir -p "$WORK/peer"
  cp -r "$PEER_DIR/." "$WORK/peer/"
  rm -rf "$WORK/peer/results" "$WORK/peer/run"
  (cd "$WORK/peer" && exec env QUICK="$QUICK" SKIP_RAW="$SKIP_RAW" bash run.sh) > "$OUT/logs/peer.log" 2>&1 &
  PEER_PID=$!
  prc=0; wait "$PEER_PID" || prc=$?
  PEER_PID=""
  if [ -s "$WORK/peer/results/latest/results.jsonl" ]; then
    cp "$WORK/peer/results/latest/results.jsonl" "$OUT/peer-results.jsonl"
    cp "$WORK/peer/results/latest/summary.md" "$OUT/peer-summary.md" 2>/dev/null || true
    PEER_ARGS=(--peer "$OUT/peer-results.jsonl")
    log "peer: done (exit $prc), its results in $OUT/peer-results.jsonl"
  else
    log "peer: no results (exit $prc); see $OUT/logs/peer.log"
    FAILED+=(peer)
  fi
fi

# The peer's storm rows join its other rows (or are its only ones).
if [ -s "$OUT/peer-storm.jsonl" ]; then
  cat "$OUT/peer-storm.jsonl" >> "$OUT/peer-results.jsonl"
  PEER_ARGS=(--peer "$OUT/peer-results.jsonl")
fi

# ---------------------------------------------------------------- summary
{
  echo "# chat-server benchmark ($TS)"
  echo
  if [ "$QUICK" = 1 ]; then echo "**QUICK=1 smoke run: short durations, not figures to quote.**"; echo; fi
  echo "Workloads and metrics: the peer benchmark's (\`../shared/peers/socketio\`, README"
  echo "\"Workload definition\"), driven by \`chat-bench\`; all processes share this machine."
  echo
  echo "- **chat-server ×2** (cluster): two instances, Redis backplane (private redis-server),"
  echo "  PostgreSQL store (a fresh database per run); clients alternate between the instances."
  echo "- **chat-server ×1** (runs \`single-*\`): one instance on its embedded defaults (SQLite"
  echo "  store in a fresh folder, in-process backplane)."
  echo "- Fresh server processes for every run; periodic notifications off"
  echo "  (\`notifications.enabled = false\`); otherwise the default configuration."
  [ "$SKIP_WS" = 1 ] || echo "- Rows \`*-ws\`: the same cluster workloads over the WebSocket transport (\`/v1/ws\` on the same"
  [ "$SKIP_WS" = 1 ] || echo "  listener), driven by chat-bench's lean WebSocket driver (\`--driver ws\`)."
  [ "$PEER" != 1 ] || echo "- **socket.io ×2**: the peer, run by its own run.sh in the same session (its summary: peer-summary.md)."
  [ ! -s "$OUT/peer-storm.jsonl" ] || echo "- **socket.io ×2** storms (\`PEER_STORM=1\`): two instances of the peer's server.js on the run's Redis, driven by \`bench/peer-storm.js\` (rows \`peer-SJ-*\`, \`peer-SR-*\`)."
  if [ "$TRACES" = 1 ]; then
    stop_pid "$SINK_PID"; SINK_PID=""
    echo "- **Traces on** (\`TRACES=1\`, sample ratio $TRACES_RATIO): requests' spans exported over"
    echo "  OTLP/gRPC to a counting collector; it received $(grep '^{' "$OUT/logs/otlp-sink.log" || echo 'an unknown number of spans (it did not stop cleanly)')."
  fi
  echo
  echo '```json'; cat "$OUT/env.json"; echo '```'
  echo
  FLOOR_ARGS=()
  [ ! -s "$OUT/floor.jsonl" ] || FLOOR_ARGS=(--floor "$OUT/floor.jsonl")
  "$BENCH" report "$RES" "${PEER_ARGS[@]}" "${FLOOR_ARGS[@]}"
} > "$OUT/summary.md"
ln -sfn "$TS" "$ROOT/bench/results/latest"
cleanup
trap - EXIT
if [ "${#FAILED[@]}" -gt 0 ]; then
  log "done with failures (${FAILED[*]}): $OUT/summary.md"
  exit 1
fi
log "done: $OUT/summary.md"
echo "$OUT/summary.md"
