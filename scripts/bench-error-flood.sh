#!/usr/bin/env bash
# Error-flood figure (issue 16, item 7): one agent reports errors with its
# own valid token as fast as it can for 10 s; prints how many bytes the
# error journal (errors.jsonl and its rotations), the whole run directory
# and the supervisor's console output took in those 10 s.
#
# Usage: scripts/bench-error-flood.sh [BIN_DIR]
# BIN_DIR holds `supervisor` and `agent-faulty` (default target/debug, built
# first), so the same script measures another branch's binaries.
set -euo pipefail

BIN_DIR=${1:-}
if [[ -z "$BIN_DIR" ]]; then
  cargo build --bins --quiet
  BIN_DIR=target/debug
fi
BIN_DIR=$(cd "$BIN_DIR" && pwd)
SECONDS_OF_FLOOD=10

scratch=$(mktemp -d)
up_pid=
cleanup() {
  if [[ -n "$up_pid" ]]; then
    kill -TERM "$up_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$up_pid" 2>/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

cat > "$scratch/flood.yaml" <<YAML
version: 1
agents:
  api:
    command: ["$BIN_DIR/agent-faulty", "--mode", "burst", "--after", "0", "--burst", "1000000000000"]
    readiness: { sdk: true }
YAML

NO_COLOR=1 "$BIN_DIR/supervisor" up --config "$scratch/flood.yaml" \
  --run-dir "$scratch/run" >"$scratch/console.txt" 2>&1 &
up_pid=$!
for _ in $(seq 600); do
  grep -q "all ready" "$scratch/console.txt" 2>/dev/null && break
  sleep 0.1
done
start_console=$(stat -c %s "$scratch/console.txt")
sleep "$SECONDS_OF_FLOOD"
journal=$(cat "$scratch"/run/errors.jsonl* 2>/dev/null | wc -c)
run_dir=$(du -sb "$scratch/run" | cut -f1)
console=$(( $(stat -c %s "$scratch/console.txt") - start_console ))
lines=$(cat "$scratch"/run/errors.jsonl* 2>/dev/null | wc -l)
echo "10 s error flood with $BIN_DIR:"
echo "  errors.jsonl (with rotations): $journal bytes, $lines records"
echo "  run directory:                 $run_dir bytes"
echo "  console output:                $console bytes"
echo "  agent killed as hung:          $(grep -c "hung:" "$scratch/console.txt" || true) times"
grep -h "errors suppressed" "$scratch/console.txt" | tail -1 | sed 's/^/  summary: /' || true
