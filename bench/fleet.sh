# Shared by bench/import.sh, scale.sh and storm.sh (sourced, not run): the fleet they measure
# and the `serve` they start.

# fleet_store: in the current directory, publishes an app (`smartcharger`, importing
# `sensorclass`) and `sensorclass` into $MPFLEET_DATA.
fleet_store() {
  echo 'import sensorclass' > smartcharger.py
  echo 'x = 1' > sensorclass.py
  "$bin" module publish smartcharger.py sensorclass.py > /dev/null
}

# fleet_csv N PINS: `device import` CSV on stdout, N devices 02000000000 + i running the app;
# PINS: `thirds` (every third pins sensorclass=1, the others do not name it) or `latest` (all
# track sensorclass's latest).
fleet_csv() {
  local n=$1 pins=$2 i m
  echo "mac,app,modules"
  for ((i = 0; i < n; i++)); do
    case $pins in
      thirds) if ((i % 3 == 0)); then m="sensorclass=1"; else m=""; fi ;;
      *) m="sensorclass=latest" ;;
    esac
    printf '02%010x,smartcharger,%s\n' "$i" "$m"
  done
}

# serve_start LOG: starts `serve` on a free port, logging to LOG; sets $pid and $base (its
# URL) once it listens.
serve_start() {
  RUST_LOG=${SERVE_LOG:-warn} "$bin" serve --listen 127.0.0.1:0 > "$1" 2>&1 &
  pid=$!
  for _ in $(seq 600); do grep -q "listening on" "$1" && break; sleep 0.1; done
  base=$(grep -o 'http://[0-9.:]*/' "$1" | head -1)
}
