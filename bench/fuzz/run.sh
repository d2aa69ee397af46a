#!/usr/bin/env bash
# The long fuzz run: schemathesis against openapi/openapi.yaml on a whole stack (nginx, FastCGI
# workers, SQLite, the Provisioner with the Cloud Hypervisor stand-in) in a private network
# namespace, with every check and the stateful phase. The CI run is tests/test_fuzz.py (bounded).
#
#   bench/fuzz/run.sh [--max-examples N] [--duration SECONDS] [--seed S] [--workers W] [--log FILE]
#
# Defaults: 200 examples per operation and phase, no time budget, a fresh seed. Needs root (for
# `unshare --net`) and scripts/deps.sh's packages. Prints schemathesis' summary, the case count,
# the worker/Provisioner PIDs before and after, and exits 1 on any finding.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build 2>&1 | tail -n 1
export HYPEMAN_BIN_DIR="$(swift build --show-bin-path)"
args=("$@")
have_examples=0
for a in "${args[@]}"; do [ "$a" = "--max-examples" ] && have_examples=1; done
[ "$have_examples" -eq 1 ] || args+=(--max-examples 200)
exec python3 tests/test_fuzz.py "${args[@]}"
