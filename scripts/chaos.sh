#!/usr/bin/env bash
# Chaos run: 50 agents plus a daemonizing one, a console nobody reads, random faults (SIGKILL, SIGSTOP hangs, crashes by
# signal, crash-at-start streaks) against a running supervisor, then `down`.
# Prints the figures (faults, restarts expected vs observed, recovery times,
# zombies, leftover processes and daemons, console lines dropped, supervisor RSS).
#
# Usage: scripts/chaos.sh [--long] [--seconds N] [--seed N]
#   default 60 s (what CI runs as part of `cargo test`); --long runs 600 s.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=60
SEED=""
while [ $# -gt 0 ]; do
  case "$1" in
    --long) SECONDS_TO_RUN=600; shift ;;
    --seconds) SECONDS_TO_RUN="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
export CHAOS_SECONDS="$SECONDS_TO_RUN"
[ -n "$SEED" ] && export CHAOS_SEED="$SEED"
cargo test --release --test chaos -- --nocapture 2>&1 | grep -E '^chaos:|test result|panicked|FAILED'
