#!/usr/bin/env bash
# Console benchmark (issue 16, items 2 and 9): how fast an agent can write
# its output while `supervisor up` copies it to the console, and how fast
# `status` answers, in three settings:
#   no-console  `up --no-console` (log files only: the baseline),
#   console     stdout read by `cat > /dev/null` (a console that keeps up),
#   stalled     stdout to a reader that never reads (a paused terminal).
# The agent writes MB megabytes of 58-byte lines with `yes | head` and
# measures the time itself; each setting prints MB/s and the slowest of 5
# `status` calls made after the write. The log files must be complete in
# every setting (checked up to 25 MB: rotation keeps 4 x 10 MB of
# timestamped lines).
#
# Usage: scripts/bench-console.sh [--mb 25] [--debug]
# Builds the binaries first (release unless --debug).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=25
PROFILE=release
while [ $# -gt 0 ]; do
  case "$1" in
    --mb) MB="$2"; shift 2 ;;
    --debug) PROFILE=debug; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ "$PROFILE" = release ]; then
  cargo build --release --bins >/dev/null 2>&1
else
  cargo build --bins >/dev/null 2>&1
fi
SUPERVISOR="$PWD/target/$PROFILE/supervisor"
LINES=$(( MB * 1000000 / 58 ))
WORK=$(mktemp -d)
UP_PID=""
SLEEPER=""
cleanup() {
  if [ -n "$SLEEPER" ]; then kill -9 "$SLEEPER" 2>/dev/null || true; fi
  if [ -n "$UP_PID" ]; then kill -9 "$UP_PID" 2>/dev/null || true; fi
  if [ -f "$WORK/writer.pid" ]; then kill -9 "$(cat "$WORK/writer.pid")" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/writer.sh" <<SCRIPT
echo \$\$ > "$WORK/writer.pid"
start=\$(date +%s%N)
yes 'agent output line 0123456789 abcdefghijklmnopqrstuvwxyz' | head -n $LINES
end=\$(date +%s%N)
echo "\$start \$end" > "$WORK/times.tmp"; mv "$WORK/times.tmp" "$WORK/times"
exec sleep 3600
SCRIPT
cat > "$WORK/manifest.yaml" <<YAML
version: 1
agents:
  writer:
    command: ["sh", "$WORK/writer.sh"]
    readiness: { start_period: 100ms }
    restart: never
YAML

run() {
  local setting="$1"
  rm -rf "$WORK/.supervisor" "$WORK/times" "$WORK/writer.pid"
  case "$setting" in
    no-console) "$SUPERVISOR" up --no-watch --no-console --config "$WORK/manifest.yaml" >/dev/null 2>"$WORK/up.err" & ;;
    console) "$SUPERVISOR" up --no-watch --config "$WORK/manifest.yaml" 2>"$WORK/up.err" | cat >/dev/null & ;;
    stalled)
      # A reader that holds the pipe open and never reads.
      rm -f "$WORK/fifo"; mkfifo "$WORK/fifo"
      sleep 3600 < "$WORK/fifo" & SLEEPER=$!
      "$SUPERVISOR" up --no-watch --config "$WORK/manifest.yaml" 2>"$WORK/up.err" > "$WORK/fifo" & ;;
  esac
  sleep 0.2
  UP_PID=$(cat "$WORK/.supervisor/supervisor.pid" 2>/dev/null || true)
  for _ in $(seq 1 1200); do
    [ -f "$WORK/times" ] && break
    sleep 0.1
  done
  [ -n "$UP_PID" ] || UP_PID=$(cat "$WORK/.supervisor/supervisor.pid")
  read -r start end < "$WORK/times"
  local slowest=0
  for _ in 1 2 3 4 5; do
    local t0 t1
    t0=$(date +%s%N)
    "$SUPERVISOR" status --run-dir "$WORK/.supervisor" >/dev/null
    t1=$(date +%s%N)
    [ $(( t1 - t0 )) -gt "$slowest" ] && slowest=$(( t1 - t0 ))
  done
  # Every line reaches the log files (rotated at 10 MB).
  local logged=0 want="$LINES"
  [ "$MB" -le 25 ] || want=0
  for _ in $(seq 1 600); do
    logged=$(cat "$WORK"/.supervisor/logs/writer.log* 2>/dev/null | grep -c 'agent output line' || true)
    [ "$logged" -ge "$want" ] && break
    sleep 0.1
  done
  local dropped
  dropped=$("$SUPERVISOR" status --json --run-dir "$WORK/.supervisor" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("console_dropped_lines", 0))')
  "$SUPERVISOR" down --run-dir "$WORK/.supervisor" >/dev/null
  UP_PID=""
  if [ -n "$SLEEPER" ]; then kill -9 "$SLEEPER" 2>/dev/null || true; SLEEPER=""; fi
  wait 2>/dev/null || true
  awk -v s="$setting" -v mb="$MB" -v ns=$(( end - start )) -v st="$slowest" -v lg="$logged" -v want="$LINES" -v dr="$dropped" 'BEGIN {
    printf "bench-console: %-10s agent wrote %d MB at %6.1f MB/s; slowest status %5.0f ms; log lines %d/%d; console lines dropped %d\n",
      s, mb, mb / (ns / 1e9), st / 1e6, lg, want, dr }'
  [ "$logged" -ge "$want" ] || { echo "bench-console: log incomplete in $setting" >&2; exit 1; }
}

for setting in no-console console stalled; do
  run "$setting"
done
