#!/usr/bin/env bash
# How long `mpfleet device import` takes for a large fleet, with the release binary:
#
#   bench/import.sh [N]        (N devices, default 100000)
#
# Builds the release binary, publishes two modules into a fresh store in a temporary
# directory, writes N devices as CSV (each MAC distinct, a third pinning sensorclass=1), and
# times: the import into the empty store (all created), the same file again (all unchanged),
# `device export` of the N devices, and that export imported back (all unchanged). For
# comparison it times 1,000 `device set` calls into a second, empty store and extrapolates
# them to N: a lower bound, since each `device set` resolves every device already in the store.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}

cargo build --release --locked --quiet
bin=$PWD/target/release/mpfleet
tmp=$(mktemp -d /tmp/mpfleet-import.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export MPFLEET_DATA=$tmp/data MPFLEET_MPY_CROSS="" RUST_LOG=warn
. bench/fleet.sh
cd "$tmp"
fleet_store
fleet_csv "$n" thirds > devices.csv

secs() { local t0=$1 t1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

t0=$(date +%s.%N); "$bin" device import devices.csv; echo "import, $n new devices: $(secs "$t0") s"
t0=$(date +%s.%N); "$bin" device import devices.csv; echo "import again, unchanged: $(secs "$t0") s"
t0=$(date +%s.%N); "$bin" device export > devices.jsonl; echo "export: $(secs "$t0") s ($(wc -l < devices.jsonl) lines)"
t0=$(date +%s.%N); "$bin" device import devices.jsonl; echo "export imported back: $(secs "$t0") s"

export MPFLEET_DATA=$tmp/sets
"$bin" module publish smartcharger.py sensorclass.py > /dev/null
t0=$(date +%s.%N)
for ((i = 0; i < 1000; i++)); do
  "$bin" device set "$(printf '03%010x' "$i")" --app smartcharger > /dev/null
done
t=$(secs "$t0")
echo "1000 \`device set\` calls: $t s (about $(echo "$t * $n / 1000" | bc) s for $n)"
