#!/usr/bin/env bash
# Dashboard cost figure (issue 21): the supervisor's own CPU with 500 agents,
# measured over equal windows without a dashboard, with `supervisor
# dashboard` attached and one page's event stream (SSE) being read, and
# without again. Prints CPU seconds per window, percent of one core, the
# difference with a client attached, and the machine's load (`uptime`).
# Target: the difference is under 1 % of one core.
#
# Usage: scripts/bench-dashboard.sh [BIN_DIR] [AGENTS] [WINDOW_SECONDS]
# BIN_DIR holds `supervisor` and `fake-agent` (default target/debug, built first).
set -euo pipefail

BIN_DIR=${1:-}
AGENTS=${2:-500}
WINDOW=${3:-20}
if [[ -z "$BIN_DIR" ]]; then
  cargo build --bins --quiet
  BIN_DIR=target/debug
fi
BIN_DIR=$(cd "$BIN_DIR" && pwd)

scratch=$(mktemp -d)
up_pid=
dashboard_pid=
client_pid=
cleanup() {
  for pid in "$client_pid" "$dashboard_pid"; do
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
  done
  if [[ -n "$up_pid" ]]; then
    kill -TERM "$up_pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$up_pid" 2>/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

{
  echo "version: 1"
  echo "agents:"
  for i in $(seq 1 "$AGENTS"); do
    echo "  agent$i:"
    echo "    command: [\"$BIN_DIR/fake-agent\"]"
    echo "    readiness: { start_period: 50ms }"
    # A few layers of dependencies, so the graph is a real one.
    if (( i > 10 )); then echo "    dependencies: [agent$(( (i - 1) / 10 ))]"; fi
  done
} > "$scratch/agents.yaml"

NO_COLOR=1 "$BIN_DIR/supervisor" up --config "$scratch/agents.yaml" --no-console --no-watch \
  --run-dir "$scratch/run" >"$scratch/console.txt" 2>&1 &
up_pid=$!
for _ in $(seq 1200); do
  grep -q "all ready" "$scratch/console.txt" 2>/dev/null && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$scratch/console.txt"; exit 1; }
  sleep 0.1
done
grep -q "all ready" "$scratch/console.txt" || { echo "agents not ready"; tail "$scratch/console.txt"; exit 1; }
sleep 5 # let the first resource samples settle

ticks=$(getconf CLK_TCK)
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# CPU seconds of the supervisor over one window.
window() {
  local before after
  before=$(cpu_ticks "$up_pid")
  sleep "$WINDOW"
  after=$(cpu_ticks "$up_pid")
  echo "scale=3; ($after - $before) / $ticks" | bc
}
percent() { echo "scale=2; 100 * $1 / $WINDOW" | bc; }

without_1=$(window)

"$BIN_DIR/supervisor" dashboard --run-dir "$scratch/run" >"$scratch/dashboard.txt" 2>/dev/null &
dashboard_pid=$!
for _ in $(seq 100); do [[ -s "$scratch/dashboard.txt" ]] && break; sleep 0.1; done
link=$(head -1 "$scratch/dashboard.txt")
events="${link/\/\?token=//api/events?token=}"
curl -sN "$events" >"$scratch/events.txt" &
client_pid=$!
sleep 2
dashboard_before=$(cpu_ticks "$dashboard_pid")
events_before=$(grep -c '^event: model' "$scratch/events.txt" || true)
with=$(window)
dashboard_after=$(cpu_ticks "$dashboard_pid")
events_after=$(grep -c '^event: model' "$scratch/events.txt" || true)
kill -TERM "$client_pid" "$dashboard_pid" 2>/dev/null || true
wait "$client_pid" "$dashboard_pid" 2>/dev/null || true
client_pid= dashboard_pid=
sleep 2

without_2=$(window)
without=$(echo "scale=3; ($without_1 + $without_2) / 2" | bc)
dashboard_cpu=$(echo "scale=3; ($dashboard_after - $dashboard_before) / $ticks" | bc)
echo "dashboard cost, $AGENTS agents, ${WINDOW}s windows, binaries in $BIN_DIR:"
echo "  supervisor CPU without dashboard:  ${without_1}s, ${without_2}s (mean $(percent "$without")% of one core)"
echo "  supervisor CPU with one client:    ${with}s ($(percent "$with")% of one core)"
echo "  difference:                        $(echo "scale=2; $(percent "$with") - $(percent "$without")" | bc) percentage points of one core (target: under 1)"
echo "  dashboard process itself:          ${dashboard_cpu}s ($(percent "$dashboard_cpu")% of one core), $(( events_after - events_before )) events sent"
echo "  load: $(uptime | sed 's/.*load average/load average/')"
