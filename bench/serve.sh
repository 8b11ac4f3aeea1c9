#!/usr/bin/env bash
# mpfleet serve against nginx serving `mpfleet export` of the same store, side by side in one
# run, under the same wrk load. See BENCHMARKS.md for what it measures and the last results.
#
#   bench/serve.sh
#
# Installs nginx, wrk, curl and python3 with apt-get if missing, builds mpfleet (release),
# creates a throwaway store (20 modules of 1-20 KB, 50 devices), exports it, starts nginx
# (its own config, prefix and temp dirs) and `mpfleet serve` on 127.0.0.1, loads each with
# wrk, prints requests/s and p99 latency per case and the mpfleet/nginx ratio, then stops
# both (by PID) and deletes everything it created.
#
# Knobs (environment):
#   THREADS=2 CONNS=64 DURATION=10s  wrk settings, the same for both servers (a case may
#                   set its own number of connections: close-1000 runs with 1000)
#   ONLY="A B"      run only these cases (names from the table below), e.g.
#                   ONLY=close-1000 REPORTS=0 bench/serve.sh: a thousand boards at once
#   ROUNDS=3        each case runs ROUNDS times per server, alternating which goes first;
#                   the table shows the median
#   WARMUP=3s       one warm-up wrk run per server before measuring
#   NGINX_WORKERS   default: nproc, the number of worker threads tokio gives mpfleet
#   REPORTS=1       also measure POST v1/{mac}/report on mpfleet (0 to skip)
#   MPFLEET_BIN     use this binary instead of building target/release/mpfleet
#   KEEP=1          keep the temp dir (store, export, logs, raw wrk output)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3s}
REPORTS=${REPORTS:-1}
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)}
ONLY=${ONLY:-}
# Listen backlog for nginx, the same as `serve` asks for (src/http/mod.rs, LISTEN_BACKLOG);
# the kernel caps both at net.core.somaxconn.
BACKLOG=4096

# 1000 connections for wrk, 1000 for the server, and their neighbours: the default soft
# limit of 1024 open files is not enough. Both servers start from this shell.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log() { echo "bench: $*" >&2; }

# --- tools ------------------------------------------------------------------------------
PATH=$PATH:/usr/sbin:/sbin
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y "${need[@]}" >&2 || { apt-get update >&2 && apt-get install -y "${need[@]}" >&2; }
fi

if [ -n "${MPFLEET_BIN:-}" ]; then
  BIN=$MPFLEET_BIN
else
  log "cargo build --release"
  cargo build --release --quiet
  BIN=$REPO/target/release/mpfleet
fi

# --- temp dir and cleanup -----------------------------------------------------------------
WORK=$(mktemp -d /tmp/mpfleet-bench.XXXXXX)
chmod 755 "$WORK" # nginx workers may run as another user
PIDS=()
stop() { # stop PID: TERM, wait up to 5 s, then KILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop "$pid"; done
  if [ -n "${KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the store and its export -------------------------------------------------------------
export MPFLEET_DATA=$WORK/store
unset MPFLEET_LISTEN RUST_LOG # mpfleet runs with its default logging, as users run it
python3 bench/fleet.py "$WORK/fleet"
log "publishing 20 modules and setting 50 devices"
for v in 1 2 3; do
  "$BIN" module publish --version "$v" "$WORK/fleet/v$v"/*.py >/dev/null 2>>"$WORK/setup.log"
done
while read -r mac app pairs; do
  # shellcheck disable=SC2086
  "$BIN" device set "$mac" --app "$app" $pairs >/dev/null 2>>"$WORK/setup.log"
done <"$WORK/fleet/devices.txt"
"$BIN" export "$WORK/export" >/dev/null 2>>"$WORK/setup.log"
chmod -R a+rX "$WORK/export"
MACS=$WORK/fleet/macs.txt
MAC0=$(head -1 "$MACS")
UNKNOWN=0badc0ffee00
log "export: $(find "$WORK/export" -type f | wc -l) files, $(du -sk "$WORK/export" | cut -f1) KB"

# --- nginx --------------------------------------------------------------------------------
NGX=$WORK/nginx
mkdir -p "$NGX/tmp"
NGX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
cat >"$NGX/nginx.conf" <<EOF
# Written by bench/serve.sh: a plain static-file server, configured as a user would.
$user_line
daemon off;
worker_processes $NGINX_WORKERS;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    # nginx closes a keep-alive connection after 1000 requests by default; mpfleet (hyper)
    # never does. Lift the limit so both serve the same persistent connections.
    keepalive_requests 1000000;
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    # The same content types and caching headers mpfleet sends.
    types {
        application/json json;
        text/x-python py;
        application/octet-stream mpy;
    }
    default_type application/json; # {mac} and latestversions have no extension
    charset utf-8;
    charset_types text/x-python;
    server {
        listen 127.0.0.1:$NGX_PORT backlog=$BACKLOG;
        root $WORK/export;
        location / { add_header Cache-Control "no-cache"; }
        location /m/ { add_header Cache-Control "public, max-age=31536000, immutable"; }
    }
}
EOF
nginx -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" &
NGX_PID=$!
PIDS+=("$NGX_PID")
NGINX=http://127.0.0.1:$NGX_PORT
for _ in $(seq 100); do curl -fso /dev/null "$NGINX/latestversions" && break; sleep 0.1; done
curl -fso /dev/null "$NGINX/latestversions" || { cat "$NGX/error.log" >&2; exit 1; }

# --- mpfleet serve ------------------------------------------------------------------------
"$BIN" serve --listen 127.0.0.1:0 >"$WORK/mpfleet.out" 2>"$WORK/mpfleet.err" &
MPF_PID=$!
PIDS+=("$MPF_PID")
MPFLEET=""
for _ in $(seq 100); do
  MPFLEET=$(sed -n '1s#^mpfleet listening on \(http://[^/]*\)/$#\1#p' "$WORK/mpfleet.out")
  [ -n "$MPFLEET" ] && break
  sleep 0.1
done
[ -n "$MPFLEET" ] || { cat "$WORK/mpfleet.err" >&2; exit 1; }
sleep 0.5
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
nginx_rss_kb() { ps -o rss= -p "$NGX_PID" --ppid "$NGX_PID" | awk '{s += $1} END {print s}'; }
MPF_RSS_IDLE=$(rss_kb "$MPF_PID")
NGX_RSS_IDLE=$(nginx_rss_kb)
MPF_THREADS=$(awk '/^Threads/ {print $2}' "/proc/$MPF_PID/status")

# --- cases --------------------------------------------------------------------------------
# name|path|what[|connections]; the 304 case's If-None-Match is each server's own ETag for
# the path; connections default to CONNS.
for mac in $(cat "$MACS"); do echo "/v1/$mac.json"; echo "/$mac"; done >"$WORK/mix.txt"
CASES=(
  "manifest|/v1/$MAC0.json|resolved manifest v1/{mac}.json"
  "manifest-close|/v1/$MAC0.json|the same, Connection: close (a new TCP connection per request, as boards do)"
  "close-1000|/v1/$MAC0.json|the same with 1000 connections at once: a thousand boards, each a connection per request|1000"
  "module-10k|/m/mqttclass/2.py|10 KB module m/{module}/{version}.py"
  "not-modified|/v1/$MAC0.json|304: v1/{mac}.json with If-None-Match"
  "unknown-404|/v1/$UNKNOWN.json|404: v1/{mac}.json of an unknown MAC"
  "mix-100|MIX|rotating over v1/{mac}.json and {mac} of all 50 devices"
)
if [ -n "$ONLY" ]; then
  kept=()
  for c in "${CASES[@]}"; do
    IFS='|' read -r name _ <<<"$c"
    [[ " $ONLY " == *" $name "* ]] && kept+=("$c")
  done
  ((${#kept[@]})) || { log "ONLY=$ONLY names no case"; exit 1; }
  CASES=("${kept[@]}")
fi
conns_of() { # conns_of NAME: the connections wrk opens for that case
  local c name conns
  for c in "${CASES[@]}"; do
    IFS='|' read -r name _ _ conns <<<"$c"
    [ "$name" = "$1" ] && { echo "${conns:-$CONNS}"; return; }
  done
  echo "$CONNS"
}

etag() { curl -sI "$1" | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: //p'; }

# Both servers must answer every case with the same status, and the same bytes where 200.
log "checking that both servers give the same answers"
for c in "${CASES[@]}"; do
  IFS='|' read -r name path _ <<<"$c"
  [ "$path" = MIX ] && path=$(sed -n 5p "$WORK/mix.txt")
  a=$(curl -so "$WORK/a.body" -w '%{http_code}' "$MPFLEET$path")
  b=$(curl -so "$WORK/b.body" -w '%{http_code}' "$NGINX$path")
  [ "$a" = "$b" ] || { log "$name: mpfleet $a, nginx $b for $path"; exit 1; }
  if [ "$a" = 200 ] && ! cmp -s "$WORK/a.body" "$WORK/b.body"; then
    log "$name: different bodies for $path"; exit 1
  fi
done
for p in "$MPFLEET" "$NGINX"; do
  code=$(curl -so /dev/null -w '%{http_code}' -H "If-None-Match: $(etag "$p/v1/$MAC0.json")" "$p/v1/$MAC0.json")
  [ "$code" = 304 ] || { log "$p: If-None-Match gave $code, not 304"; exit 1; }
done

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

# CPU time (clock ticks) a server has used: "TOTAL RECORDER" (RECORDER: mpfleet's thread that
# writes sightings and reports to SQLite; 0 for nginx, whose workers are summed).
cpu_ticks() {
  if [ "$1" = mpfleet ]; then
    awk '{t += $14 + $15; if ($2 == "(recorder)") r += $14 + $15} END {print t, r + 0}' \
      "/proc/$MPF_PID/task/"*/stat
  else
    local w files=("/proc/$NGX_PID/stat")
    for w in $(ps -o pid= --ppid "$NGX_PID"); do files+=("/proc/$w/stat"); done
    awk '{t += $14 + $15} END {print t, 0}' "${files[@]}"
  fi
}
HZ=$(getconf CLK_TCK)

# The kernel's count of connections dropped because a listen queue was full (system-wide:
# a full accept backlog makes the client resend after a timeout of 200 ms to 1 s, which is
# what a p99 of hundreds of milliseconds usually is).
overflows() { awk '/^TcpExt:/ {if (!h) {split($0, k); h = 1} else for (i = 2; i <= NF; i++) if (k[i] == "ListenOverflows") print $i}' /proc/net/netstat; }

# run_wrk PEER NAME PATH [DURATION] -> appends "PEER NAME BENCH ... cpu_us=C rec_us=R" to
# results, C and R being the server's CPU microseconds per request (all of it, and the recorder's)
run_wrk() {
  local peer=$1 name=$2 path=$3 duration=${4:-$DURATION} base url line
  if [ "$peer" = mpfleet ]; then base=$MPFLEET; else base=$NGINX; fi
  local -a env=()
  case $name in
    manifest-close | close-1000) env+=(BENCH_CLOSE=1) ;;
    not-modified) env+=("BENCH_INM=$(etag "$base$path")") ;;
    mix-100) env+=("BENCH_PATHS=$WORK/mix.txt"); path=/ ;;
  esac
  url=$base$path
  local t0 r0 t1 r1 n o0
  o0=$(overflows)
  read -r t0 r0 < <(cpu_ticks "$peer")
  line=$(env "${env[@]}" wrk -t"$THREADS" -c"$(conns_of "$name")" -d"$duration" --timeout 5s \
    -s "$REPO/bench/wrk.lua" "$url" | tee -a "$WORK/wrk.log" | grep '^BENCH ')
  read -r t1 r1 < <(cpu_ticks "$peer")
  n=$(field requests <<<"$line")
  echo "$peer $name $line $(awk -v t=$((t1 - t0)) -v r=$((r1 - r0)) -v n="$n" -v hz="$HZ" \
    'BEGIN {printf "cpu_us=%.2f rec_us=%.2f", t * 1e6 / hz / n, r * 1e6 / hz / n}') overflows=$(($(overflows) - o0))" >>"$WORK/results.txt"
}

log "warm-up: $WARMUP per server"
run_wrk mpfleet mix-100 MIX "$WARMUP" && run_wrk nginx mix-100 MIX "$WARMUP"
: >"$WORK/results.txt"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "measuring: ${#CASES[@]} cases x 2 servers x $ROUNDS rounds of $DURATION (wrk -t$THREADS -c$CONNS)"
for ((r = 0; r < ROUNDS; r++)); do
  i=0
  for c in "${CASES[@]}"; do
    IFS='|' read -r name path _ <<<"$c"
    if (((r + i) % 2 == 0)); then order=(mpfleet nginx); else order=(nginx mpfleet); fi
    for peer in "${order[@]}"; do run_wrk "$peer" "$name" "$path"; done
    log "round $((r + 1))/$ROUNDS: $name done"
    i=$((i + 1))
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
MPF_RSS_LOAD=$(rss_kb "$MPF_PID")
MPF_HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$MPF_PID/status")
NGX_RSS_LOAD=$(nginx_rss_kb)

# --- results ------------------------------------------------------------------------------
median() { sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
med() { grep "^$1 $2 " "$WORK/results.txt" | field "$3" | median; }
total() { grep "^$1 $2 " "$WORK/results.txt" | field "$3" | awk '{s += $1} END {print s + 0}'; }

echo
echo "mpfleet serve vs nginx $(nginx -v 2>&1 | sed 's#.*/##'), same store, same run"
echo "  $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock device || echo ' (src modified)')"
echo "  $(nproc) CPUs: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "  wrk -t$THREADS -c$CONNS -d$DURATION on the same machine (loopback), identical for both (close-1000: -c1000);"
echo "  median of $ROUNDS rounds; nginx worker_processes $NGINX_WORKERS, mpfleet $MPF_THREADS threads"
echo "  load average before/after: $LOAD_BEFORE / $LOAD_AFTER"
echo
printf '%-15s %11s %11s %6s %11s %11s   %s\n' case "mpfleet r/s" "nginx r/s" ratio "mpfleet p99" "nginx p99" \
  "server CPU us/request: mpfleet (its recorder) / nginx"
printf '%-15s %11s %11s %6s %11s %11s   %s\n' --------------- ----------- --------- ----- ----------- --------- \
  -----------------------------------------------------
for c in "${CASES[@]}"; do
  IFS='|' read -r name _ _ <<<"$c"
  a=$(med mpfleet "$name" rps); b=$(med nginx "$name" rps)
  pa=$(med mpfleet "$name" p99_us); pb=$(med nginx "$name" p99_us)
  printf '%-15s %11.0f %11.0f %6.2f %8.2f ms %8.2f ms   %5.1f (%4.1f) / %5.1f\n' "$name" "$a" "$b" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN {print (b > 0 ? a / b : 0)}')" \
    "$(awk -v p="$pa" 'BEGIN {print p / 1000}')" "$(awk -v p="$pb" 'BEGIN {print p / 1000}')" \
    "$(med mpfleet "$name" cpu_us)" "$(med mpfleet "$name" rec_us)" "$(med nginx "$name" cpu_us)"
done
echo
for c in "${CASES[@]}"; do
  IFS='|' read -r name _ what _ <<<"$c"
  printf '  %-15s %s\n' "$name" "$what"
done
echo "requests/s of each round (mpfleet | nginx):"
for c in "${CASES[@]}"; do
  IFS='|' read -r name _ _ <<<"$c"
  printf '  %-15s %s | %s\n' "$name" \
    "$(grep "^mpfleet $name " "$WORK/results.txt" | field rps | paste -sd' ')" \
    "$(grep "^nginx $name " "$WORK/results.txt" | field rps | paste -sd' ')"
done
echo "p99 of each round, ms (mpfleet | nginx), and listen-queue overflows in the round:"
for c in "${CASES[@]}"; do
  IFS='|' read -r name _ _ <<<"$c"
  printf '  %-15s %s | %s\n' "$name" \
    "$(grep "^mpfleet $name " "$WORK/results.txt" | field p99_us | awk '{printf "%.2f ", $1 / 1000}')" \
    "$(grep "^nginx $name " "$WORK/results.txt" | field p99_us | awk '{printf "%.2f ", $1 / 1000}')"
  printf '  %-15s %s | %s\n' "" \
    "$(grep "^mpfleet $name " "$WORK/results.txt" | field overflows | paste -sd' ')" \
    "$(grep "^nginx $name " "$WORK/results.txt" | field overflows | paste -sd' ')"
done
echo
errs=$(awk '{for (i = 3; i <= NF; i++) if ($i ~ /^sockerr=/) {split($i, f, "="); s += f[2]}} END {print s + 0}' "$WORK/results.txt")
bad=$(grep -v ' unknown-404 ' "$WORK/results.txt" | field non2xx3xx | awk '{s += $1} END {print s + 0}')
echo "socket errors (all runs): $errs; unexpected 4xx/5xx outside unknown-404: $bad"
echo "RSS: mpfleet $((MPF_RSS_IDLE / 1024)) MB idle, $((MPF_RSS_LOAD / 1024)) MB after load (peak $((MPF_HWM / 1024)) MB);" \
  "nginx (master + $NGINX_WORKERS workers) $((NGX_RSS_IDLE / 1024)) MB idle, $((NGX_RSS_LOAD / 1024)) MB after load"

# --- reports (mpfleet only) ---------------------------------------------------------------
sent_404=$(total mpfleet unknown-404 requests)
if [ "$REPORTS" = 1 ]; then
  log "reports: POST v1/{mac}/report for $DURATION"
  line=$(BENCH_REPORT_MACS=$MACS wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 5s \
    -s "$REPO/bench/wrk.lua" "$MPFLEET/" | tee -a "$WORK/wrk.log" | grep '^BENCH ')
  REP_REQ=$(field requests <<<"$line"); REP_BAD=$(field non2xx3xx <<<"$line")
  REP_RPS=$(field rps <<<"$line"); REP_P99=$(field p99_us <<<"$line")
fi
MPF_RSS_END=$(rss_kb "$MPF_PID")
stop "$MPF_PID" # reports are committed before their 200, and shutdown drains the recorder
warnings=$(grep -c 'WARN' "$WORK/mpfleet.err" || true)
dropped=$(grep -c 'sighting was dropped' "$WORK/mpfleet.err" || true)
read -r ROWS MAXID REPORTED UNKNOWN_REQS < <(python3 - "$MPFLEET_DATA/mpfleet.db" "$UNKNOWN" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
q = lambda sql, *a: db.execute(sql, a).fetchone()[0]
print(q("SELECT count(*) FROM reports"), q("SELECT coalesce(max(id), 0) FROM reports"),
      q("SELECT count(*) FROM devices WHERE last_report IS NOT NULL"),
      q("SELECT coalesce(sum(requests), 0) FROM unknown_devices WHERE mac = ?", sys.argv[2]))
EOF
)
echo "unknown-MAC sightings: wrk sent $sent_404 requests for $UNKNOWN, the store counted $UNKNOWN_REQS"
if [ "$REPORTS" = 1 ]; then
  ok=$((REP_REQ - REP_BAD))
  echo
  echo "reports: POST v1/{mac}/report over 50 devices, wrk -t$THREADS -c$CONNS -d$DURATION"
  printf '  %.0f requests/s, p99 %.2f ms; %d answered 200, %d errors\n' "$REP_RPS" \
    "$(awk -v p="$REP_P99" 'BEGIN {print p / 1000}')" "$ok" "$REP_BAD"
  echo "  stored: $MAXID reports inserted (max id), $ROWS rows kept (50 per device x 50 devices = 2500), $REPORTED devices with a last report"
  if [ "$MAXID" -ge "$ok" ] && [ "$MAXID" -le $((ok + CONNS)) ]; then
    echo "  check: OK (every 200 is stored; at most $CONNS more were in flight when wrk stopped)"
  else
    echo "  check: MISMATCH: $ok answered 200 but $MAXID inserted"
  fi
fi
echo "mpfleet RSS at the end: $((MPF_RSS_END / 1024)) MB; stderr: $warnings warning line(s), $dropped about dropped sightings"
