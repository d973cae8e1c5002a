#!/usr/bin/env bash
# The two-host example (config/two-hosts/, fake agents shaped like MainPC +
# PC2) in two network namespaces joined by a veth pair: keys, both
# supervisors, every agent ready, one MainPC agent that a PC2 agent depends
# on killed and PC2 seeing it go and come back, then `status --json` of the
# joint view (from PC2) as the last line. Removes everything it made. Exit 0
# only if every step held. Needs root and `ip` (iproute2).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "demo: FAILED: $*" >&2
  for host in mainpc pc2; do
    if [ -d "${work:-}/run-$host" ]; then
      echo "-- $host: status, last lines of supervisor.log" >&2
      "$sv" status --run-dir "$work/run-$host" >&2 || true
      tail -n 15 "$work/run-$host/supervisor.log" >&2 || true
    fi
  done
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
command -v ip >/dev/null || fail "needs ip (apt-get install iproute2)"

cargo build --quiet --bins
target_dir="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
sv="$target_dir/debug/supervisor"

tag=$$
main_ns="sv-demo-main-$tag"
pc2_ns="sv-demo-pc2-$tag"
veth_main="svdm$((tag % 100000))"
veth_pc2="svdp$((tag % 100000))"
work="$(mktemp -d)"
export MAINPC_IP=10.231.9.1 PC2_IP=10.231.9.2

cleanup() {
  set +e
  for host in mainpc pc2; do
    pid_file="$work/run-$host/supervisor.pid"
    [ -f "$pid_file" ] && kill -9 "$(cat "$pid_file")" 2>/dev/null
  done
  ip netns del "$main_ns" 2>/dev/null
  ip netns del "$pc2_ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { echo "== $*" >&2; }

step "network: $main_ns ($MAINPC_IP) <-> $pc2_ns ($PC2_IP)"
ip netns add "$main_ns"
ip netns add "$pc2_ns"
ip link add "$veth_main" type veth peer name "$veth_pc2"
ip link set "$veth_main" netns "$main_ns"
ip link set "$veth_pc2" netns "$pc2_ns"
ip -n "$main_ns" addr add "$MAINPC_IP/24" dev "$veth_main"
ip -n "$pc2_ns" addr add "$PC2_IP/24" dev "$veth_pc2"
for ns in "$main_ns" "$pc2_ns"; do ip -n "$ns" link set lo up; done
ip -n "$main_ns" link set "$veth_main" up
ip -n "$pc2_ns" link set "$veth_pc2" up

step "keys"
MAINPC_LINK_KEY="$("$sv" keygen --out "$work/mainpc.key" 2>/dev/null)"
PC2_LINK_KEY="$("$sv" keygen --out "$work/pc2.key" 2>/dev/null)"
export MAINPC_LINK_KEY PC2_LINK_KEY

configs=(--config config/two-hosts/main.yaml --config config/two-hosts/pc2.yaml --config config/two-hosts/hosts.yaml)
up() { # host namespace
  ip netns exec "$2" "$sv" up "${configs[@]}" --host "$1" --run-dir "$work/run-$1" \
    --link-key "$work/$1.key" --no-watch -d >&2 || fail "up on $1"
}
status() { "$sv" status --json --run-dir "$work/run-$1"; }
# jq-free checks: python reads the joint status.
check() { # host python-expression-over-s
  status "$1" 2>/dev/null | python3 -c "
import json, sys
s = json.load(sys.stdin)
a = {(x['host'], x['name'].split('/')[-1]): x for x in s['agents']}
peers = (s.get('link') or {}).get('peers', [])
sys.exit(0 if ($2) else 1)" 2>/dev/null
}
wait_for() { # seconds what host expression
  local deadline=$((SECONDS + $1))
  until check "$3" "$4"; do
    [ $SECONDS -lt $deadline ] || fail "$2 (within $1 s)"
    sleep 0.2
  done
  echo "   ok: $2" >&2
}

step "PC2 first: SpeechRelayService waits for MainPC's StreamingTTSAgent"
up pc2 "$pc2_ns"
wait_for 30 "PC2's own agents ready" pc2 "a[('pc2','TieredResponder')]['state'] == 'ready'"
check pc2 "a[('pc2','SpeechRelayService')]['state'] == 'pending'" ||
  fail "SpeechRelayService started before MainPC's StreamingTTSAgent was ready"
echo "   ok: SpeechRelayService pending" >&2

step "MainPC"
up mainpc "$main_ns"
all_ready="all(x['state'] == 'ready' for x in s['agents']) and len(s['agents']) == 13 and peers[0]['link'] == 'up'"
wait_for 60 "all 13 agents of both hosts ready, seen from PC2" pc2 "$all_ready"
wait_for 20 "the same joint view from MainPC" mainpc "$all_ready"

step "kill MainPC's StreamingTTSAgent (SpeechRelayService on PC2 depends on it)"
tts_pid="$(status mainpc | python3 -c "import json,sys; print([a for a in json.load(sys.stdin)['agents'] if a['name']=='StreamingTTSAgent'][0]['pid'])")"
kill -9 "$tts_pid"
wait_for 30 "PC2 sees MainPC restart it (a new pid, ready, the reason)" pc2 \
  "a[('mainpc','StreamingTTSAgent')]['state'] == 'ready' and a[('mainpc','StreamingTTSAgent')]['pid'] != $tts_pid and 'SIGKILL' in (a[('mainpc','StreamingTTSAgent')]['reason'] or '')"
# PC2's supervisor took it as not ready (stopped) and awaited it again.
[ "$(grep -c 'StreamingTTSAgent .*probing (on another host)' "$work/run-pc2/supervisor.log")" -ge 2 ] ||
  fail "PC2's supervisor did not see StreamingTTSAgent go and come back"
echo "   ok: PC2's supervisor saw it go and awaited it again" >&2
check pc2 "a[('pc2','SpeechRelayService')]['state'] == 'ready'" || fail "SpeechRelayService is not running"
echo "   ok: SpeechRelayService kept running" >&2

step "joint status (from PC2)"
"$sv" status --run-dir "$work/run-pc2" >&2 || true
joint="$(status pc2 | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))')"

step "down --all-hosts"
"$sv" down --all-hosts --run-dir "$work/run-mainpc" >&2 || fail "down --all-hosts"
deadline=$((SECONDS + 60))
for host in mainpc pc2; do
  while [ -f "$work/run-$host/supervisor.pid" ] && kill -0 "$(cat "$work/run-$host/supervisor.pid")" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "the supervisor of $host did not stop"
    sleep 0.2
  done
done
left="$(ip netns pids "$main_ns"; ip netns pids "$pc2_ns")"
[ -z "$left" ] || fail "processes left in the namespaces: $left"
echo "   ok: no process left on either host" >&2
echo "$joint"
