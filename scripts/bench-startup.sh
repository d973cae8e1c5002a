#!/usr/bin/env bash
# Start-up benchmark for `supervisor up` (issues 3 and 18).
#
# Generates manifests of `fake-agent`s that each become ready DELAY (default
# 200 ms, the field's typical figure) after they start: tcp readiness on
# their own port at the manifest's default probe interval (100 ms; override
# with --interval). Graphs:
#   (a) the dependency graph of the largest MainPC manifest in the corpus
#       (skipped, with the reason, when the corpus is missing),
#   (b) 500 agents in 5 levels, each depending on 1-3 agents of the level above,
#   (c) a 20-deep chain.
# For each it prints the time `supervisor up --exit-when-ready` takes to
# all-ready against the critical path (longest chain x DELAY), and against
# the naive sequential launcher measured in the same run: a Python loop
# that starts each agent in dependency order and polls its port every 20 ms
# before starting the next (scripts/benchlib.py `naive_sequential`). Order
# violations (an agent started before a dependency was ready) come from the
# agents' own timestamps. Targets (issue 18): (a) <= 1.05x, (b) <= 1.25x,
# (c) <= 1.03x and faster than the naive loop, zero violations.
#
# The naive baseline of (b) takes 500 x DELAY (100 s at 200 ms), so it runs
# only with --sequential-wide.
#
# Usage: scripts/bench-startup.sh [--delay 200ms] [--interval 100ms] [--debug]
#          [--no-sequential] [--sequential-wide] [--only a|b|c] [--runs N]
# Needs python3 (standard library only). Builds the binaries first.
set -euo pipefail

DELAY=200ms
INTERVAL=""
PROFILE=release
SEQUENTIAL=1
SEQUENTIAL_WIDE=0
ONLY=""
RUNS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --delay) DELAY="$2"; shift 2 ;;
    --interval) INTERVAL="$2"; shift 2 ;;
    --release) PROFILE=release; shift ;;
    --debug) PROFILE=debug; shift ;;
    --no-sequential) SEQUENTIAL=0; shift ;;
    --sequential-wide) SEQUENTIAL_WIDE=1; shift ;;
    --only) ONLY="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
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

export ROOT BIN WORK DELAY INTERVAL SEQUENTIAL SEQUENTIAL_WIDE ONLY RUNS
PYTHONPATH="$ROOT/scripts" python3 - <<'PY'
import json, os, statistics, subprocess, sys
import benchlib

ROOT, BIN, WORK = os.environ["ROOT"], os.environ["BIN"], os.environ["WORK"]
SEQUENTIAL, ONLY = os.environ["SEQUENTIAL"] == "1", os.environ["ONLY"]
SEQUENTIAL_WIDE = os.environ["SEQUENTIAL_WIDE"] == "1"
DELAY = benchlib.seconds(os.environ["DELAY"])
INTERVAL = os.environ["INTERVAL"] or None
RUNS = int(os.environ["RUNS"])
TARGETS = {"a": 1.05, "b": 1.25, "c": 1.03}
counter = 0
# Agents -> (agents without dependencies, seconds from the first one's
# start to the last one's): how much spawning a level serialises.
spread_by_graph = {}

def run_ours(deps):
    global counter
    counter += 1
    directory = os.path.join(WORK, f"run{counter}")
    os.makedirs(directory)
    path, record = os.path.join(directory, "manifest.yaml"), os.path.join(directory, "record.txt")
    summary = os.path.join(directory, "summary.json")
    benchlib.write_manifest(path, deps, BIN, DELAY, interval=INTERVAL)
    command = [f"{BIN}/supervisor", "--log", "warn", "up", "--config", path, "--exit-when-ready",
               "--no-console", "--no-bind-check", "--summary-json", summary,
               "--run-dir", os.path.join(directory, "run")]
    result = subprocess.run(command, env={**os.environ, "FAKE_AGENT_RECORD": record},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=1800)
    if result.returncode != 0:
        sys.exit(f"supervisor exited {result.returncode}:\n{result.stderr[-3000:]}")
    events = benchlib.read_record(record)
    roots = [name for name, dependencies in deps.items() if not [d for d in dependencies if d in deps]]
    root_starts = sorted(when for kind, name, when, _ in events if kind == "start" and name in roots)
    spread = (root_starts[-1] - root_starts[0]) if len(root_starts) > 1 else 0.0
    spread_by_graph[len(deps)] = (len(root_starts), spread)
    return json.load(open(summary))["all_ready_s"], benchlib.violations(deps, events)

def run_naive(deps):
    global counter
    counter += 1
    record = os.path.join(WORK, f"naive{counter}.txt")
    took = benchlib.naive_sequential(deps, BIN, DELAY, record)
    return took, benchlib.violations(deps, benchlib.read_record(record))

graphs = {"b": benchlib.wide_graph, "c": benchlib.chain_graph}
corpus, missing = benchlib.corpus_dir(ROOT)
interval = INTERVAL or "100ms (default)"
containment = os.environ.get("SUPERVISOR_CONTAINMENT") or "default (a cgroup per agent where available)"
print(f"fake agents ready {DELAY * 1000:.0f} ms after start; tcp readiness, interval {interval}; "
      f"{RUNS} run(s) each, median shown; containment {containment}; {benchlib.load()}\n")
print(f"{'graph':<30} {'bound':>7} {'ours':>8} {'ratio':>6} {'target':>6} {'viol':>4}"
      + (f" {'naive seq':>9} {'ours/naive':>10} {'viol':>4}" if SEQUENTIAL else ""))
failed = False
for key in "abc":
    if ONLY and key != ONLY:
        continue
    if key == "a":
        if corpus is None:
            print(f"(a) mainpc: SKIPPED: {missing}", flush=True)
            continue
        label, deps = benchlib.mainpc_graph(BIN, corpus)
    else:
        label, deps = graphs[key]()
    bound = benchlib.depth(deps) * DELAY
    results = [run_ours(deps) for _ in range(RUNS)]
    ours = statistics.median(took for took, _ in results)
    violations = max(viol for _, viol in results)
    ratio = ours / bound
    failed |= ratio > TARGETS[key] or violations > 0
    line = f"({key}) {label:<26} {bound:>6.2f}s {ours:>7.3f}s {ratio:>5.3f}x {TARGETS[key]:>5.2f}x {violations:>4}"
    if SEQUENTIAL and key == "b" and not SEQUENTIAL_WIDE:
        line += f"  naive skipped (~{len(deps) * DELAY:.0f} s; --sequential-wide)"
    elif SEQUENTIAL:
        naive = [run_naive(deps) for _ in range(RUNS)]
        naive_took = statistics.median(took for took, _ in naive)
        naive_viol = max(viol for _, viol in naive)
        line += f" {naive_took:>8.3f}s {ours / naive_took:>9.3f}x {naive_viol:>4}"
        if key == "c":
            failed |= ours >= naive_took
    print(line, flush=True)
    roots, spread = spread_by_graph[len(deps)]
    if roots > 1:
        print(f"    its {roots} agents without dependencies started within {spread * 1000:.0f} ms "
              f"({spread * 1000 / (roots - 1):.2f} ms per agent: fork/exec spread)", flush=True)
print(f"\n{benchlib.load()}")
print("result:", "targets missed" if failed else "all targets met")
sys.exit(1 if failed else 0)
PY
