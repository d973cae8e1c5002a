#!/usr/bin/env bash
# The project's one test command, for a fresh clone as for a developer:
#   1. the Python SDK and pytest (pyzmq comes with the SDK);
#   2. `cargo fmt --check`, and `cargo clippy --all-targets -- -D warnings`
#      without the optional `async` feature (this also checks every target);
#   3. `cargo test --features async` (Rust unit, integration and doc tests;
#      tests/it/up.rs runs the README's example system);
#   4. the Python SDK's tests against the `supervisor` binary built in step 3.
# Every step runs even when an earlier one failed; the summary (passed,
# failed, skipped with their reasons) is always printed, and the exit code is
# non-zero when anything failed.
#
# Tests that need the real-world legacy corpus read it from
# $SUPERVISOR_CORPUS (default: ../shared/corpus when it exists); without it
# they are skipped, and listed as skipped below.
set -uo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export SUPERVISOR_SKIP_LOG="$work/skipped.tsv"
: >"$SUPERVISOR_SKIP_LOG"
failed_steps=()

echo "== pip install ./python pytest"
python3 -m pip install --quiet --disable-pip-version-check ./python pytest ||
  failed_steps+=("pip install")
rm -rf python/build python/*.egg-info # left in the source tree by pip's build

echo "== cargo fmt --check"
cargo fmt --check || failed_steps+=("cargo fmt")

echo "== cargo clippy --all-targets -- -D warnings (default features)"
cargo clippy --all-targets -- -D warnings || failed_steps+=("cargo clippy")

echo "== cargo test --features async"
cargo test --features async --no-fail-fast 2>&1 | tee "$work/cargo.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed_steps+=("cargo test")

echo "== pytest python/tests"
target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
SUPERVISOR_BIN="${SUPERVISOR_BIN:-$target_dir/debug/supervisor}" \
  python3 -m pytest python/tests -p no:cacheprovider -q -rs 2>&1 | tee "$work/pytest.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed_steps+=("pytest")

echo "== summary"
awk '/^test result:/ {passed += $4; failed += $6; ignored += $8; n++}
  END {printf "cargo test: %d passed, %d failed, %d ignored (%d test binaries)\n", passed, failed, ignored, n}' \
  "$work/cargo.log"
grep -E '(passed|failed|error).* in [0-9.]+s' "$work/pytest.log" | tail -1 | sed 's/^=* */pytest: /; s/ *=*$//'
skipped=$(wc -l <"$SUPERVISOR_SKIP_LOG")
echo "skipped: $skipped test(s) whose input is missing"
cut -f2 "$SUPERVISOR_SKIP_LOG" | sort | uniq -c | sed 's/^ */  /'
cut -f1 "$SUPERVISOR_SKIP_LOG" | sed 's/^/    /'
if [ ${#failed_steps[@]} -gt 0 ]; then
  echo "FAILED: ${failed_steps[*]}"
  exit 1
fi
echo "OK"
