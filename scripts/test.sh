#!/usr/bin/env bash
# The project's one test command, for a fresh machine as for a developer:
#   1. the Python SDK and pytest (pyzmq comes with the SDK);
#   2. `cargo test --features async` (Rust unit, integration and doc tests,
#      the SDK's optional async API included; tests/legacy_agents.rs and
#      tests/python_sdk.rs run Python agents and fail, naming
#      `pip install pyzmq`, without step 1), after checking that the crate
#      also builds without the feature;
#   3. the Python SDK's tests against the `supervisor` binary built in step 2.
# Stops at the first failure; ends with both runners' summaries.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== pip install ./python pytest"
python3 -m pip install --quiet --disable-pip-version-check ./python pytest
rm -rf python/build python/*.egg-info  # left in the source tree by pip's build

echo "== cargo check (default features)"
cargo check --all-targets

echo "== cargo test --features async"
cargo test --features async 2>&1 | tee "$log"

echo "== pytest python/tests"
SUPERVISOR_BIN="${SUPERVISOR_BIN:-$PWD/target/debug/supervisor}" \
  python3 -m pytest python/tests -p no:cacheprovider -q 2>&1 | tee -a "$log"

echo "== summary"
grep -E '^test result:' "$log" | awk '{passed += $4; failed += $6; ignored += $8} END {
  printf "cargo test: %d passed, %d failed, %d ignored (%d test binaries)\n", passed, failed, ignored, NR }'
grep -E '^[0-9]+ passed|passed in|failed in' "$log" | tail -1 | sed 's/^/pytest: /'
