#!/usr/bin/env bash
# Start-up benchmark for `supervisor up` (issue 3).
#
# Generates manifests of `fake-agent`s that each become ready a fixed DELAY
# after they start (tcp readiness on their own port), over three graphs:
#   (a) the dependency graph of the largest MainPC manifest in the corpus,
#   (b) a wide graph: 500 agents in 5 levels, each depending on 1-3 agents of
#       the level above,
#   (c) a 20-deep chain.
# For each it runs `supervisor up --exit-when-ready` and, in the same run,
# `--sequential` (one agent at a time), then prints the time to all-ready,
# the critical-path lower bound (longest chain x DELAY), their ratio, and
# how many agents started before one of their dependencies was ready
# (from the agents' own timestamps). Targets: ratio <= 1.10 for (a) and (c),
# <= 1.25 for (b), zero violations.
#
# The sequential baseline of (b) takes 500 x DELAY (over 8 minutes at the
# default 1 s), so it runs only with --sequential-wide.
# A shorter --delay stresses start-up overhead: each agent process costs a few
# ms of CPU to start, which a level of 100 agents on 2 cores turns into
# ~150 ms per level that the critical-path bound does not include.
#
# Usage: scripts/bench-startup.sh [--delay 1s] [--debug] [--no-sequential] [--sequential-wide] [--only a|b|c]
# Needs python3 (standard library only). Builds the binaries first.
set -euo pipefail

DELAY=1s
PROFILE=release
SEQUENTIAL=1
SEQUENTIAL_WIDE=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --delay) DELAY="$2"; shift 2 ;;
    --release) PROFILE=release; shift ;;
    --debug) PROFILE=debug; shift ;;
    --no-sequential) SEQUENTIAL=0; shift ;;
    --sequential-wide) SEQUENTIAL_WIDE=1; shift ;;
    --only) ONLY="$2"; shift 2 ;;
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
CORPUS="${CORPUS:-$ROOT/../shared/corpus/legacy-startup-configs}"
WORK="$(mktemp -d)"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT

export BIN CORPUS WORK DELAY SEQUENTIAL SEQUENTIAL_WIDE ONLY
python3 - <<'PY'
import json, os, random, socket, subprocess, sys, time

BIN, CORPUS, WORK = os.environ["BIN"], os.environ["CORPUS"], os.environ["WORK"]
SEQUENTIAL, ONLY = os.environ["SEQUENTIAL"] == "1", os.environ["ONLY"]
SEQUENTIAL_WIDE = os.environ["SEQUENTIAL_WIDE"] == "1"

def seconds(text):
    text = text.strip()
    if text.endswith("ms"): return float(text[:-2]) / 1000
    if text.endswith("s"): return float(text[:-1])
    return float(text)

DELAY = seconds(os.environ["DELAY"])

def free_ports(count):
    ports, candidate = [], random.randint(10000, 25000)
    while len(ports) < count:
        candidate += 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
                ports.append(candidate)
            except OSError:
                pass
    return ports

def mainpc_graph():
    index = os.path.join(CORPUS, "INDEX.tsv")
    rows = [line.rstrip("\n").split("\t") for line in open(index)][1:]
    rows = [row for row in rows if row[1].startswith("main_pc_code/")]
    best = None
    for row in sorted(rows, key=lambda row: -int(row[4])):
        path = os.path.join(CORPUS, row[0])
        result = subprocess.run([f"{BIN}/supervisor", "plan", "--config", path, "--format", "json"],
                                capture_output=True, text=True)
        if result.returncode == 0:
            best = (row[0], json.loads(result.stdout)["dependencies"])
            break
    if best is None:
        sys.exit("no MainPC manifest of the corpus plans cleanly")
    name, deps = best
    return f"mainpc ({name}, {len(deps)} agents)", deps

def wide_graph(levels=5, width=100, seed=7):
    rng = random.Random(seed)
    deps = {}
    for level in range(levels):
        for index in range(width):
            above = [f"l{level-1}_{i}" for i in range(width)] if level else []
            deps[f"l{level}_{index}"] = rng.sample(above, rng.randint(1, 3)) if above else []
    return f"wide ({levels * width} agents, depth {levels})", deps

def chain_graph(length=20):
    return f"chain ({length} deep)", {f"c{i}": ([f"c{i-1}"] if i else []) for i in range(length)}

def depth(deps):
    memo = {}
    def d(name):
        if name not in memo:
            memo[name] = 1 + max((d(dep) for dep in deps[name] if dep in deps), default=0)
        return memo[name]
    return max(d(name) for name in deps)

def manifest(deps, path):
    ports = free_ports(len(deps))
    lines = ["version: 1", "agents:"]
    for (name, dependencies), port in zip(sorted(deps.items()), ports):
        lines += [
            f"  {name}:",
            f'    command: ["{BIN}/fake-agent", "--ready-after", "{int(DELAY * 1000)}ms"]',
            f"    port: {port}",
            f"    dependencies: [{', '.join(d for d in dependencies if d in deps)}]",
            f"    readiness: {{ tcp: {port}, timeout: 120s, interval: 10ms }}",
            "    stop: { signal: SIGTERM, grace: 5s }",
        ]
    open(path, "w").write("\n".join(lines) + "\n")

def run(deps, label, sequential):
    directory = os.path.join(WORK, label + ("-seq" if sequential else ""))
    os.makedirs(directory)
    path = os.path.join(directory, "manifest.yaml")
    record = os.path.join(directory, "record.txt")
    summary = os.path.join(directory, "summary.json")
    manifest(deps, path)
    command = [f"{BIN}/supervisor", "--log", "warn", "up", "--config", path, "--exit-when-ready",
               "--no-console", "--no-bind-check", "--summary-json", summary, "--run-dir", os.path.join(directory, "run")]
    if sequential:
        command.append("--sequential")
    result = subprocess.run(command, env={**os.environ, "FAKE_AGENT_RECORD": record},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=1800)
    if result.returncode != 0:
        sys.exit(f"{label}: supervisor exited {result.returncode}:\n{result.stderr[-3000:]}")
    data = json.load(open(summary))
    starts, readies = {}, {}
    for line in open(record):
        kind, name, nanos, _pid = line.split()
        if kind == "start": starts.setdefault(name, int(nanos))
        if kind == "ready": readies.setdefault(name, int(nanos))
    violations = sum(1 for name, dependencies in deps.items() for dep in dependencies
                     if dep in deps and starts[name] < readies[dep])
    return data["all_ready_s"], violations

graphs = {"a": mainpc_graph, "b": wide_graph, "c": chain_graph}
print(f"fake agents ready {DELAY * 1000:.0f} ms after start; tcp readiness probed every 10 ms\n")
header = f"{'graph':<34} {'bound':>7} {'all-ready':>9} {'ratio':>6} {'target':>6} {'viol':>4}"
if SEQUENTIAL:
    header += f" {'seq bound':>9} {'sequential':>10} {'seq/bound':>9} {'seq/par':>7}"
print(header)
failed = False
for key, build in graphs.items():
    if ONLY and key != ONLY:
        continue
    label, deps = build()
    bound = depth(deps) * DELAY
    parallel, violations = run(deps, key, False)
    target = 1.25 if key == "b" else 1.10
    ratio = parallel / bound
    failed |= ratio > target or violations > 0
    line = f"({key}) {label:<30} {bound:>6.2f}s {parallel:>8.2f}s {ratio:>5.2f}x {target:>5.2f}x {violations:>4}"
    if SEQUENTIAL and key == "b" and not SEQUENTIAL_WIDE:
        line += f" {len(deps) * DELAY:>8.1f}s {'skipped (--sequential-wide)':>30}"
    elif SEQUENTIAL:
        sequential, seq_violations = run(deps, key, True)
        seq_bound = len(deps) * DELAY
        line += f" {seq_bound:>8.1f}s {sequential:>9.1f}s {sequential / seq_bound:>8.2f}x {sequential / parallel:>6.1f}x"
        failed |= seq_violations > 0
    print(line, flush=True)
print("\nresult:", "targets missed" if failed else "all targets met")
sys.exit(1 if failed else 0)
PY
