#!/usr/bin/env bash
# What `mpfleet serve` holds and how fast a change reaches what it serves, at fleet sizes:
#
#   bench/scale.sh [N ...]        (default: 10000 100000)
#
# For each N, in a fresh store in a temporary directory (release binary): publishes an app and
# a library, imports N devices with `device import` (every one tracking the app's latest, a
# third also pinning the library), starts `serve`, and prints
#   - the RSS of `serve` once it listens, and after fetching every device's manifest once;
#   - `module publish` of a new app version (every device's generation moves): its wall time,
#     the rebuild of the served tree that follows (`build_ms` wall and `build_cpu_ms` the
#     refresher thread's own CPU, from serve's log: the CPU figure is the one to read on a
#     busy machine) and the RSS afterwards (the peak holds two trees for a moment).
# Budgets (issue 10): RSS <= 20 MB at 10,000 devices and <= 64 MB at 100,000; rebuild <= 200 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000)

cargo build --release --locked --quiet
bin=$PWD/target/release/mpfleet
tmp=$(mktemp -d /tmp/mpfleet-scale.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
export MPFLEET_MPY_CROSS="" RUST_LOG=warn
. bench/fleet.sh
rss() { awk '/^VmRSS/ {printf "%.1f MB", $2 / 1024}' "/proc/$1/status"; }

printf '%-8s %-14s %-14s %-10s %-22s %-14s\n' devices "RSS listening" "RSS read all" publish "rebuild wall / cpu" "RSS after"
for n in "${sizes[@]}"; do
  export MPFLEET_DATA=$tmp/data-$n
  cd "$tmp"
  fleet_store
  fleet_csv "$n" thirds > devices.csv
  "$bin" device import devices.csv > /dev/null
  SERVE_LOG=info serve_start "serve-$n.log"
  listening=$(rss "$pid")
  # Every manifest once (rendered on demand: RSS must not grow with what was read).
  python3 - "$base" "$n" <<'PY'
import sys, urllib.request
base, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with urllib.request.urlopen("%sv1/02%010x.json" % (base, i)) as r:
        r.read()
PY
  read_all=$(rss "$pid")
  echo 'import sensorclass  # 2' > smartcharger.py
  t0=$(date +%s.%N)
  "$bin" module publish smartcharger.py > /dev/null
  publish=$(echo "$(date +%s.%N) - $t0" | bc)
  for _ in $(seq 600); do grep -q "build_ms" "serve-$n.log" && break; sleep 0.1; done
  build=$(grep -o 'build_ms=[0-9]* build_cpu_ms=[0-9]*' "serve-$n.log" | tail -1 | sed 's/build_ms=//; s/ build_cpu_ms=/ ms \/ /')
  after=$(rss "$pid")
  printf '%-8s %-14s %-14s %-10s %-22s %-14s\n' "$n" "$listening" "$read_all" "$(printf '%.2f s' "$publish")" "$build ms" "$after"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  cd - > /dev/null
done
