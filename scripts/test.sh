#!/usr/bin/env bash
# The test command: builds, runs the Swift unit tests, then the integration suites (real nginx,
# FastCGI workers, SQLite, the Provisioner, a local OCI registry, QEMU VMs, the official SDK).
set -uo pipefail
cd "$(dirname "$0")/.."
swift build 2>&1 | tail -n 3
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "build failed"; exit "$status"; }
echo "== Swift unit tests"
swift test 2>&1 | tee /tmp/hypeman-swift-test.log | grep -E "^(✘|✔ Test run|Test Suite .*(passed|failed)|.*error:)" | tail -n 40
swift_status=${PIPESTATUS[0]}
echo "== Integration tests (pytest)"
HYPEMAN_BIN_DIR="$(swift build --show-bin-path)" python3 -m pytest -q -rs tests/ "$@"
py_status=$?
echo "swift test exit: $swift_status, pytest exit: $py_status"
[ "$swift_status" -eq 0 ] && [ "$py_status" -eq 0 ]
