"""Shared by the start-up and restart benchmarks (scripts/bench-*.sh).

Owns: the benchmark graphs (the corpus's MainPC graph, a 20-deep chain, 500
agents in 5 levels), free loopback ports, manifests of `fake-agent`s that
become ready a fixed delay after they start, reading the agents' record
file (`start|ready|crash|stop NAME UNIX_NANOS PID` lines), counting order
violations, the naive sequential baseline, and the load line.
Does not own: what the supervisor does (it is run as a process) or what
each benchmark prints.

Python standard library only.
"""

import json
import os
import random
import socket
import subprocess
import sys
import time


def seconds(text):
    """`200ms`, `1s`, `1.5` (seconds) -> float seconds."""
    text = text.strip()
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    if text.endswith("s"):
        return float(text[:-1])
    return float(text)


def load():
    """`load 12.31 10.02 9.80` from /proc/loadavg (1, 5, 15 minutes)."""
    with open("/proc/loadavg") as loadavg:
        return "load " + " ".join(loadavg.read().split()[:3])


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


def corpus_dir(root):
    """The corpus's legacy-startup-configs/ (the rule of tests/common/corpus.rs),
    or (None, reason)."""
    variable = os.environ.get("SUPERVISOR_CORPUS")
    if variable == "":
        return None, "SUPERVISOR_CORPUS is set to the empty string"
    base = variable or os.path.join(root, "..", "shared", "corpus")
    directory = os.path.join(base, "legacy-startup-configs")
    if not os.path.isdir(directory):
        return None, f"the legacy corpus is missing (tried {directory}; set SUPERVISOR_CORPUS)"
    return directory, None


def mainpc_graph(binaries, corpus):
    """The dependency graph of the largest MainPC manifest of the corpus that
    plans cleanly: (label, {agent: [dependencies]})."""
    rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(corpus, "INDEX.tsv"))][1:]
    rows = [row for row in rows if row[1].startswith("main_pc_code/")]
    for row in sorted(rows, key=lambda row: -int(row[4])):
        result = subprocess.run(
            [f"{binaries}/supervisor", "plan", "--config", os.path.join(corpus, row[0]), "--format", "json"],
            capture_output=True, text=True)
        if result.returncode == 0:
            deps = json.loads(result.stdout)["dependencies"]
            return f"mainpc ({len(deps)} agents)", deps
    sys.exit("no MainPC manifest of the corpus plans cleanly")


def wide_graph(levels=5, width=100, seed=7):
    rng = random.Random(seed)
    deps = {}
    for level in range(levels):
        above = [f"l{level - 1}_{i}" for i in range(width)] if level else []
        for index in range(width):
            deps[f"l{level}_{index}"] = rng.sample(above, rng.randint(1, 3)) if above else []
    return f"wide ({levels * width} agents, {levels} levels)", deps


def chain_graph(length=20):
    return f"chain ({length} deep)", {f"c{i}": ([f"c{i - 1}"] if i else []) for i in range(length)}


def depth(deps):
    """Agents on the longest dependency chain."""
    memo = {}

    def of(name):
        if name not in memo:
            memo[name] = 1 + max((of(dep) for dep in deps[name] if dep in deps), default=0)
        return memo[name]

    return max(of(name) for name in deps)


def dependency_order(deps):
    """Every agent after its dependencies (depth-first, stable by name)."""
    order, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        for dep in sorted(deps[name]):
            if dep in deps:
                visit(dep)
        order.append(name)

    for name in sorted(deps):
        visit(name)
    return order


def agent_command(binaries, delay, extra=()):
    return [f"{binaries}/fake-agent", "--ready-after", f"{int(delay * 1000)}ms", *extra]


def write_manifest(path, deps, binaries, delay, interval=None, extra=None, restart=None, liveness=None):
    """A manifest of fake agents, each with its own port and tcp readiness at
    the manifest's default probe interval unless `interval` is given.
    `extra` and `restart` map an agent to extra arguments / a restart block;
    `liveness` (a function of the port) gives every agent a liveness probe.
    Returns {agent: port}."""
    ports = dict(zip(sorted(deps), free_ports(len(deps))))
    lines = ["version: 1", "agents:"]
    for name in sorted(deps):
        port = ports[name]
        command = agent_command(binaries, delay, (extra or {}).get(name, ()))
        readiness = f"tcp: {port}, timeout: 300s" + (f", interval: {interval}" if interval else "")
        lines += [
            f"  {name}:",
            f"    command: {json.dumps(command)}",
            f"    port: {port}",
            f"    dependencies: [{', '.join(d for d in deps[name] if d in deps)}]",
            f"    readiness: {{ {readiness} }}",
            "    stop: { signal: SIGTERM, grace: 5s }",
        ]
        if restart and name in restart:
            lines.append(f"    restart: {restart[name]}")
        if liveness:
            lines.append(f"    liveness: {liveness(port)}")
    with open(path, "w") as manifest:
        manifest.write("\n".join(lines) + "\n")
    return ports


def read_record(path):
    """[(kind, name, seconds, pid)] in file order."""
    events = []
    if os.path.exists(path):
        for line in open(path):
            parts = line.split()
            if len(parts) == 4:
                events.append((parts[0], parts[1], int(parts[2]) / 1e9, int(parts[3])))
    return events


def violations(deps, record):
    """Dependency edges whose dependent started before its dependency's
    first `ready`."""
    starts, readies = {}, {}
    for kind, name, when, _pid in record:
        if kind == "start":
            starts.setdefault(name, when)
        if kind == "ready":
            readies.setdefault(name, when)
    return sum(1 for name, dependencies in deps.items() for dep in dependencies
               if dep in deps and (name not in starts or dep not in readies or starts[name] < readies[dep]))


def port_open(port):
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def naive_sequential(deps, binaries, delay, record, poll=0.020):
    """The naive launcher of issue 18: start each agent in dependency order,
    poll its port every `poll` s, start the next once it answers. Returns
    seconds to all-ready; stops every agent it started (by pid)."""
    ports = dict(zip(sorted(deps), free_ports(len(deps))))
    children = []
    started = time.monotonic()
    try:
        for name in dependency_order(deps):
            children.append(subprocess.Popen(
                agent_command(binaries, delay, ["--name", name, "--port", str(ports[name]), "--record", record]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 120
            while not port_open(ports[name]):
                if time.monotonic() > deadline or children[-1].poll() is not None:
                    sys.exit(f"naive baseline: {name} never opened port {ports[name]}")
                time.sleep(poll)
        return time.monotonic() - started
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
