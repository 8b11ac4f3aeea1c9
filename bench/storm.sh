#!/usr/bin/env bash
# A check-in storm against `mpfleet serve`: N distinct boards arriving at a fixed rate, each
# fetching its sealed manifest and posting a signed report, one connection per request (as
# boards do). Open loop: arrivals keep their schedule however slow the answers get.
#
#   bench/storm.sh [N RATE]...      (default: 10000 1000  100000 1000)
#
# For each pair, in a fresh store in a temporary directory (release build): imports N devices,
# starts `serve`, runs examples/storm.rs (latency from when each request was due, percentiles
# as HdrHistogram prints them), then waits for every report to be stored and counts the rows.
# Issue 10's goal: 10,000 boards within 10 s and 100,000 within 100 s, no errors, p99 < 20 ms,
# every report stored. It also prints how much the database grew per stored report (what the
# 50 reports kept per device cost on disk: docs/scaling.md). Needs python3 (its sqlite3
# module counts the rows).
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=("$@")
[ ${#pairs[@]} -gt 0 ] || pairs=(10000 1000 100000 1000)

cargo build --release --locked --quiet --bin mpfleet --example storm
bin=$PWD/target/release/mpfleet
storm=$PWD/target/release/examples/storm
tmp=$(mktemp -d /tmp/mpfleet-storm.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
export MPFLEET_MPY_CROSS="" RUST_LOG=warn
ulimit -n 65536 2>/dev/null || true

. bench/fleet.sh
rows() {
  python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from reports").fetchone()[0])' "$1"
}

set -- "${pairs[@]}"
while [ $# -ge 2 ]; do
  n=$1 rate=$2
  shift 2
  export MPFLEET_DATA=$tmp/data-$n
  cd "$tmp"
  fleet_store
  fleet_csv "$n" latest > devices.csv
  "$bin" device import devices.csv > /dev/null
  db_before=$(du -b "$MPFLEET_DATA/mpfleet.db" | cut -f1)
  serve_start "serve-$n.log"
  echo "== $n boards at $rate/s"
  status=0
  "$storm" --server "$base" --data "$MPFLEET_DATA" --boards "$n" --rate "$rate" || status=$?
  # Reports are written by serve's recorder thread after they are answered: stop serve (it
  # writes every report it accepted before it exits), then count.
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  stored=$(rows "$MPFLEET_DATA/mpfleet.db")
  echo "reports stored: $stored of $n"
  db_after=$(du -b "$MPFLEET_DATA/mpfleet.db" | cut -f1)
  echo "database: $((db_before / 1024)) KiB before, $((db_after / 1024)) KiB after: $(( (db_after - db_before) / (stored > 0 ? stored : 1) )) bytes per stored report"
  [ "$status" = 0 ] && [ "$stored" = "$n" ] || echo "storm: NOT MET (errors or reports missing)"
  cd - > /dev/null
done
