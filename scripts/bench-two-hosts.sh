#!/usr/bin/env bash
# Ready propagation across the peer link: MainPC's agent `Tts` becomes ready
# -> PC2's dependent `Relay` is spawned. Two network namespaces joined by a
# veth pair (like scripts/demo-two-hosts.sh). PC2 knows Tts only as a
# declared agent probed every PROBE_INTERVAL (1s), so without the link it
# would notice the readiness up to 1s late; with the link it is pushed.
#
# Each run: `restart Tts --with-dependents` on MainPC (PC2 restarts Relay,
# which then waits for Tts); the time is from the `ready` line fake-agent Tts
# writes when it listens (both namespaces share the machine's clock) to the
# `start` line of the new Relay. Prints median and max over RUNS (100) and
# the probe interval, with the load. Needs root and `ip` (iproute2).
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${RUNS:-100}"
probe_interval=1
fail() {
  echo "bench: FAILED: $*" >&2
  for host in mainpc pc2; do
    [ -f "${work:-}/run-$host/supervisor.log" ] && { echo "-- $host" >&2; tail -n 25 "$work/run-$host/supervisor.log" >&2; }
  done
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
command -v ip >/dev/null || fail "needs ip (apt-get install iproute2)"

cargo build --quiet --bins
target_dir="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
sv="$target_dir/debug/supervisor"
fake="$target_dir/debug/fake-agent"

tag=$$
main_ns="sv-bench-main-$tag"
pc2_ns="sv-bench-pc2-$tag"
work="$(mktemp -d)"
main_ip=10.231.8.1
pc2_ip=10.231.8.2
cleanup() {
  set +e
  for host in mainpc pc2; do
    pid_file="$work/run-$host/supervisor.pid"
    [ -f "$pid_file" ] && kill -9 "$(cat "$pid_file")" 2>/dev/null
  done
  for ns in "$main_ns" "$pc2_ns"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid"; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$main_ns"
ip netns add "$pc2_ns"
ip link add "svbm$((tag % 100000))" type veth peer name "svbp$((tag % 100000))"
ip link set "svbm$((tag % 100000))" netns "$main_ns"
ip link set "svbp$((tag % 100000))" netns "$pc2_ns"
ip -n "$main_ns" addr add "$main_ip/24" dev "svbm$((tag % 100000))"
ip -n "$pc2_ns" addr add "$pc2_ip/24" dev "svbp$((tag % 100000))"
for ns in "$main_ns" "$pc2_ns"; do ip -n "$ns" link set lo up; done
ip -n "$main_ns" link set "svbm$((tag % 100000))" up
ip -n "$pc2_ns" link set "svbp$((tag % 100000))" up

main_key="$("$sv" keygen --out "$work/mainpc.key" 2>/dev/null)"
pc2_key="$("$sv" keygen --out "$work/pc2.key" 2>/dev/null)"
cat > "$work/main.yaml" <<EOF
version: 1
agents:
  Tts:
    command: ["$fake", --bind, "$main_ip", --port, "7301"]
    port: 7301
    readiness: {tcp: 7301, interval: 10ms}
EOF
cat > "$work/pc2.yaml" <<EOF
version: 1
agents:
  Relay:
    command: ["$fake", --bind, "$pc2_ip", --port, "7302"]
    port: 7302
    readiness: {tcp: 7302, interval: 10ms}
    dependencies: [Tts]
EOF
cat > "$work/hosts.yaml" <<EOF
version: 1
hosts:
  mainpc:
    address: $main_ip
    link_port: 7990
    public_key: "$main_key"
    agents:
      Tts: {tcp: 7301, interval: ${probe_interval}s, timeout: 600s}
  pc2: {address: $pc2_ip, link_port: 7990, public_key: "$pc2_key"}
EOF

export FAKE_AGENT_RECORD="$work/record"
ip netns exec "$main_ns" "$sv" up --config "$work/main.yaml@mainpc" --config "$work/hosts.yaml" \
  --host mainpc --run-dir "$work/run-mainpc" --link-key "$work/mainpc.key" --no-watch -d --wait --timeout 60 >/dev/null ||
  fail "up on mainpc"
ip netns exec "$pc2_ns" "$sv" up --config "$work/pc2.yaml@pc2" --config "$work/hosts.yaml" \
  --host pc2 --run-dir "$work/run-pc2" --link-key "$work/pc2.key" --no-watch -d --wait --timeout 60 >/dev/null ||
  fail "up on pc2"

# `start|ready|stop NAME UNIX_NANOS PID` lines; the latest of a kind and name.
latest() { grep "^$1 $2 " "$FAKE_AGENT_RECORD" | tail -n 1 | awk '{print $3}'; }
relay_started() { grep -c "^start Relay " "$FAKE_AGENT_RECORD" || true; }

samples=()
for run in $(seq 1 "$runs"); do
  before="$(relay_started)"
  "$sv" restart Tts --with-dependents --run-dir "$work/run-mainpc" >/dev/null 2>&1 || fail "restart (run $run)"
  deadline=$((SECONDS + 30))
  until [ "$(relay_started)" -gt "$before" ]; do
    [ $SECONDS -lt $deadline ] || fail "Relay not started again (run $run)"
    sleep 0.02
  done
  # Wait for Relay to be ready so runs do not overlap.
  until "$sv" status --json --run-dir "$work/run-pc2" 2>/dev/null |
    python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if all(a['state']=='ready' for a in s['agents']) else 1)"; do
    [ $SECONDS -lt $deadline ] || fail "pc2 not ready again (run $run)"
    sleep 0.05
  done
  samples+=("$(( $(latest start Relay) - $(latest ready Tts) ))")
done

python3 - "$probe_interval" "$(uptime)" "${samples[@]}" <<'EOF'
import statistics, sys
interval, load, samples = float(sys.argv[1]), sys.argv[2], [int(x) / 1e6 for x in sys.argv[3:]]
gated = [s for s in samples if s >= 0]
print(f"ready propagation across the peer link (MainPC Tts ready -> PC2 Relay spawned), {len(samples)} runs: "
      f"median {statistics.median(samples):.1f} ms, max {max(samples):.1f} ms, "
      f"min {min(samples):.1f} ms; probe interval {interval * 1000:.0f} ms "
      f"(median {statistics.median(samples) / (interval * 1000):.3f} of it); "
      f"{len(samples) - len(gated)} run(s) where Relay started before Tts was ready; load:{load.split('load average:')[-1]}")
EOF
"$sv" down --all-hosts --run-dir "$work/run-mainpc" >/dev/null 2>&1 || true
