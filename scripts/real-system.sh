#!/usr/bin/env bash
# The real MainPC system under supervisor, following docs/migrating.md from
# its repository root. Not run by CI: it needs the legacy repository
# (HaymayndzUltra/voice-assistant-prod, e.g. at commit 598f63a) and the
# agents' Python packages.
#
#   scripts/real-system.sh REPO [--timeout SECONDS] [-- extra `up` arguments]
#
# Runs `check --compile`, `plan` and `up --keep-going --exit-when-ready` on
# REPO/main_pc_code/config/startup_config.yaml, then prints one line per
# agent: ready (how it was checked, time to ready), or the exact reason it
# is not. Uses `supervisor` from PATH, else this checkout's release build
# (built if missing). Python: `python3` from PATH (activate the agents'
# virtualenv first). Extra `up` arguments (after `--`) are passed on, e.g.
# `-- --env REDIS_URL=redis://127.0.0.1:6379/0`.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="${1:?usage: scripts/real-system.sh REPO [--timeout SECONDS] [-- up arguments]}"
shift
timeout=600
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
manifest=main_pc_code/config/startup_config.yaml
[ -f "$repo/$manifest" ] || { echo "no $manifest in $repo" >&2; exit 2; }

supervisor="$(command -v supervisor || true)"
if [ -z "$supervisor" ]; then
  (cd "$here" && cargo build --release --bins --quiet)
  target_dir="$(cd "$here" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  supervisor="$target_dir/release/supervisor"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$repo"

echo "== supervisor check --compile --config $manifest"
"$supervisor" check --compile --no-bind-check --config "$manifest" 2>&1 | grep -E '^error|^  help|^checked' || true

echo "== supervisor plan --config $manifest"
"$supervisor" plan --config "$manifest" 2>&1 | tail -12 || true

echo "== supervisor up --keep-going --exit-when-ready --timeout $timeout"
started=$(date +%s)
set +e
"$supervisor" up --config "$manifest" --keep-going --exit-when-ready --timeout "$timeout" \
  --no-console --no-watch --no-bind-check --run-dir "$work/run" --summary-json "$work/summary.json" \
  "${extra[@]}" >"$work/up.log" 2>&1
code=$?
set -e
echo "up exited $code after $(( $(date +%s) - started )) s (its output: kept in $work/up.log until this script ends)"

if [ ! -f "$work/summary.json" ]; then
  echo "up started nothing; what it said:"
  grep -A1 '^error' "$work/up.log" | head -20
  exit 1
fi
echo "== per agent"
python3 - "$work/summary.json" <<'EOF'
import json, sys
try:
    summary = json.load(open(sys.argv[1]))
except (OSError, ValueError) as error:
    sys.exit(f"no summary: {error}")
agents = summary["agents"]
width = max(map(len, agents), default=5)
ready = 0
for name in sorted(agents, key=lambda n: (agents[n]["ready_at_s"] is None, agents[n]["ready_at_s"] or 0, n)):
    agent = agents[name]
    if agent["ready_at_s"] is not None:
        ready += 1
        took = agent["time_to_ready_s"]
        line = f"ready       {took:7.2f}s  by {agent.get('readiness') or '?'}"
        if agent["restarts"]:
            line += f"  after {agent['restarts']} restart(s)"
    elif agent.get("waiting_on"):
        line = f"{agent['state']:<10}  waiting for {', '.join(agent['waiting_on'])}"
    else:
        line = f"{agent['state']:<10}  {agent.get('reason') or ''}"
    print(f"{name:<{width}}  {line}")
print(f"{ready}/{len(agents)} ready")
if summary.get("failure"):
    print("up:", summary["failure"].splitlines()[0])
EOF
