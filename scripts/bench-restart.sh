#!/usr/bin/env bash
# Restart benchmark for `supervisor up` (issue 18).
#
# One `up` of a 5-deep chain of `fake-agent`s, each ready DELAY (200 ms)
# after it starts (tcp readiness at the default interval), plus one
# crash-looping agent beside it. Then:
#   1. kill -9 the middle agent of the chain, which had been up and ready,
#      KILLS times (10) at INTERVAL (2 s) intervals, and print the median and
#      max time from the kill until it is ready again (its port open, from
#      the agent's own timestamp), against its own readiness time DELAY.
#      Target (issue 18): <= 1.1x DELAY: an agent that had been healthy for
#      longer than its backoff step restarts at once.
#   2. the crash-looping agent (ready after DELAY, crashes 300 ms after each
#      start; backoff 100 ms x2 up to 1.6 s) over the same time: the delay
#      between each crash and the next start. It should grow exponentially
#      to the cap and stay there (crash loops stay throttled).
# The killed agent's restart block allows 100 restarts within 60 s so the
# benchmark measures restart latency, not giving up.
#
# Usage: scripts/bench-restart.sh [--delay 200ms] [--kills 10] [--every 2s] [--debug]
# Needs python3 (standard library only). Builds the binaries first.
set -euo pipefail

DELAY=200ms
KILLS=10
EVERY=2s
PROFILE=release
while [ $# -gt 0 ]; do
  case "$1" in
    --delay) DELAY="$2"; shift 2 ;;
    --kills) KILLS="$2"; shift 2 ;;
    --every) EVERY="$2"; shift 2 ;;
    --release) PROFILE=release; shift ;;
    --debug) PROFILE=debug; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin supervisor --bin fake-agent
else
  cargo build --quiet --bin supervisor --bin fake-agent
fi
BIN="$ROOT/target/$PROFILE"
WORK="$(mktemp -d)"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT

export BIN WORK DELAY KILLS EVERY
PYTHONPATH="$ROOT/scripts" python3 - <<'PY'
import os, signal, statistics, subprocess, sys, time
import benchlib

BIN, WORK = os.environ["BIN"], os.environ["WORK"]
DELAY, EVERY = benchlib.seconds(os.environ["DELAY"]), benchlib.seconds(os.environ["EVERY"])
KILLS = int(os.environ["KILLS"])
VICTIM, LOOPER = "c2", "looper"
BACKOFF_INITIAL, BACKOFF_MAX = 0.1, 1.6

_, deps = benchlib.chain_graph(5)
deps[LOOPER] = []
manifest, record = os.path.join(WORK, "manifest.yaml"), os.path.join(WORK, "record.txt")
benchlib.write_manifest(
    manifest, deps, BIN, DELAY,
    extra={LOOPER: ["--crash-after", "300ms"]},
    restart={
        VICTIM: "{ policy: always, max_restarts: 100, within: 60s }",
        LOOPER: f"{{ policy: always, backoff: {{ initial: {int(BACKOFF_INITIAL * 1000)}ms, "
                f"max: {int(BACKOFF_MAX * 1000)}ms, multiplier: 2 }}, max_restarts: 1000, within: 60s }}",
    })

def events():
    return benchlib.read_record(record)

def wait_for(predicate, what, bound=60):
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        found = predicate(events())
        if found is not None:
            return found
        time.sleep(0.005)
    sys.exit(f"bench-restart: gave up after {bound} s waiting for {what}")

print(f"fake agents ready {DELAY * 1000:.0f} ms after start; {benchlib.load()}")
supervisor = subprocess.Popen(
    [f"{BIN}/supervisor", "--log", "warn", "up", "--config", manifest, "--no-console",
     "--no-bind-check", "--no-watch", "--run-dir", os.path.join(WORK, "run")],
    env={**os.environ, "FAKE_AGENT_RECORD": record},
    stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "supervisor.log"), "w"))
try:
    chain = [name for name in deps if name != LOOPER]
    wait_for(lambda record: True if set(chain) <= {n for k, n, _, _ in record if k == "ready"} else None,
             "the chain to be ready")
    recovery = []
    for kill in range(KILLS):
        time.sleep(EVERY)
        pid = [p for k, n, _, p in events() if k == "start" and n == VICTIM][-1]
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        ready_at = wait_for(lambda record: next((when for k, n, when, p in record
                                                 if k == "ready" and n == VICTIM and p != pid
                                                 and when > killed_at), None),
                            f"{VICTIM} to be ready again after kill {kill + 1}")
        recovery.append(ready_at - killed_at)
    median, worst = statistics.median(recovery), max(recovery)
    print(f"\n1. kill -9 of {VICTIM} (mid-chain, up and ready) {KILLS} times every {EVERY:g} s -> ready again:")
    print("   each (ms): " + " ".join(f"{took * 1000:.0f}" for took in recovery))
    print(f"   median {median * 1000:.0f} ms ({median / DELAY:.2f}x its readiness time {DELAY * 1000:.0f} ms), "
          f"max {worst * 1000:.0f} ms ({worst / DELAY:.2f}x); target median <= 1.10x: "
          f"{'PASS' if median <= 1.1 * DELAY else 'FAIL'}")

    looped = events()
    delays, crashed_at = [], None
    for kind, name, when, _ in looped:
        if name != LOOPER:
            continue
        if kind == "crash":
            crashed_at = when
        elif kind == "start" and crashed_at is not None:
            delays.append(when - crashed_at)
            crashed_at = None
    print(f"\n2. crash loop ({LOOPER}: crashes 300 ms after each start; backoff "
          f"{BACKOFF_INITIAL * 1000:.0f} ms x2, cap {BACKOFF_MAX * 1000:.0f} ms): crash -> next start (ms):")
    print("   " + " ".join(f"{delay * 1000:.0f}" for delay in delays))
    capped = [delay for delay in delays if delay >= BACKOFF_MAX * 0.9]
    throttled = len(delays) >= 4 and delays[0] < delays[2] < delays[3] * 1.01 and all(d <= BACKOFF_MAX * 1.5 for d in delays)
    print(f"   {len(delays)} restarts; {len(capped)} at the cap; grows then capped: {'PASS' if throttled and capped else 'FAIL'}")
    print(f"\n{benchlib.load()}")
finally:
    supervisor.send_signal(signal.SIGTERM)
    try:
        supervisor.wait(timeout=30)
    except subprocess.TimeoutExpired:
        supervisor.kill()
        supervisor.wait()
PY
