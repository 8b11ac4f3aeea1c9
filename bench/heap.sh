#!/usr/bin/env bash
# How much heap a simulated board needs, by bisection over `mpfleet sim --heap` (256-byte steps):
#
#   bench/heap.sh
#
# Runs the `heap::figures` test (tests/heap.rs, ignored in the normal suite) through
# ./test.sh, which installs the pinned MicroPython unix port and mpy-cross into .tools/ first,
# and prints:
#   floor          an image holding only an empty /main.py boots: the simulator's own cost
#   plain boot     an installed board reaches its app and settles, no update
#   update (.mpy)  a whole update to a new module version, then the new version runs; the
#                  runtime precompiled (the server has mpy-cross)
#   update (no mpy-cross) the same on a server without mpy-cross (MPFLEET_MPY_CROSS=""):
#                  the app comes as source; the runtime still comes precompiled, since the
#                  binary carries it
#   each boot      the .mpy update's boots one at a time (check, install, report) and a
#                  later check that finds nothing new, each on a copy of the board taken
#                  before that boot: which boot decides the update's figure
# each also as "+N k over the floor", against the budgets the tests assert.
# Figures are for the 64-bit unix port; a 32-bit board needs about half.
#
# Knobs (environment):
#   MPFLEET_HEAP_PARALLEL  probes run at once by a search (default: nproc)
#   KEEP_LOG=1             keep the full log (every probe) and print where it is
set -euo pipefail
cd "$(dirname "$0")/.."

export MPFLEET_HEAP_PARALLEL=${MPFLEET_HEAP_PARALLEL:-$(nproc)}
log=$(mktemp /tmp/mpfleet-heap.XXXXXX.log)
cleanup() { if [ -n "${KEEP_LOG:-}" ]; then echo "bench: log kept in $log" >&2; else rm -f "$log"; fi; }
trap cleanup EXIT

echo "bench: bisecting (heap::figures, $MPFLEET_HEAP_PARALLEL probes at once)" >&2
start=$(date +%s)
if ! ./test.sh heap::figures -- --ignored --exact --nocapture >"$log" 2>&1; then
  tail -60 "$log" >&2
  echo "bench: heap::figures failed (full log: KEEP_LOG=1 bench/heap.sh)" >&2
  KEEP_LOG=1
  exit 1
fi
took=$(($(date +%s) - start))

line=$(grep '^FIGURES heap: ' "$log" | tail -1)
detail=$(grep '^FIGURES heap detail: ' "$log" | tail -1)
steps=$(grep '^FIGURES heap steps: ' "$log" | tail -1)
# "key=NN.NNk" -> NN.NN (KiB; figures are in steps of 256 bytes)
get() { sed -n "s/.* $1=\([0-9.]*\)k.*/\1/p" <<<"$2"; }
budget() { sed -n "s/.* $1 +\([0-9.]*\)k.*/\1/p" <<<"$detail"; }
floor=$(get floor "$line")
probes=$(grep -c '^heap .*: [0-9.]*k \(ok\|fails\)$' "$log" || true)

echo
echo "heap a simulated board needs: smallest mpfleet sim --heap, 256-byte steps (64-bit unix port)"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && ! git diff --quiet HEAD -- device src sim 2>/dev/null; then
  commit="$commit (device/, src/ or sim/ modified)"
fi
echo "  $(date -u +%Y-%m-%dT%H:%MZ), commit $commit"
echo "  $(.tools/venv/bin/micropython -c 'import sys; print("MicroPython %d.%d.%d" % sys.implementation.version[:3], sys.implementation._machine)' 2>/dev/null || true)"
echo "  $probes probes in ${took}s"
echo
printf '%-44s %6s %16s %8s\n' "" heap "over the floor" budget
row() { # label key [budget-key]
  local k b=""
  k=$(get "$2" "$3")
  [ -n "${4:-}" ] && b="+$(budget "$4")k"
  printf '%-44s %5sk %15s %8s\n' "$1" "$k" "+$(awk "BEGIN { print $k - $floor }")k" "$b"
}
printf '%-44s %5sk\n' "floor: empty /main.py on a littlefs image" "$floor"
row "plain boot (runtime .mpy)" boot "$line" boot
row "whole update, runtime precompiled (.mpy)" update_mpy "$line" update_mpy
row "whole update, server without mpy-cross" update_source "$line" update_source
row "plain boot, server without mpy-cross" boot_source "$detail"
echo "each boot of that update (.mpy) alone, on a copy of the board as it finds it:"
row "  check: manifest, seal, reset" check "$steps"
row "  install: downloads, swap, reset" install "$steps"
row "  report: tidy, report, reset" report "$steps"
row "  a later check that finds nothing new" routine_check "$steps"
printf '%-44s %5sk\n' "floor on a --flash-dir instead of an image" "$(get floor_dir "$detail")"
echo "($(sed -n 's/.*; without mpy-cross/without mpy-cross/p' <<<"$detail"))"
echo
echo "$line"
echo "$steps"
