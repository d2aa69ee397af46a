#!/usr/bin/env bash
# The test command: builds; starts two local OCI registries on 127.0.0.1 (plain, and with basic
# auth) with the offline test images; runs the Swift tests; then the integration suites (real
# nginx, FastCGI workers, SQLite, the Provisioner, QEMU VMs, the official SDK) with pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
swift build 2>&1 | tail -n 3
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "build failed"; exit "$status"; }

work=$(mktemp -d /tmp/hm-test-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
plain=$(free_port); authp=$(free_port)
cleanup() {
  bash tests/fixtures/registry.sh stop "$plain" "$work/plain" >/dev/null 2>&1
  bash tests/fixtures/registry.sh stop "$authp" "$work/auth" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
if bash tests/fixtures/registry.sh start "$plain" "$work/plain" >/dev/null \
   && bash tests/fixtures/registry.sh start "$authp" "$work/auth" tester:s3cret >/dev/null \
   && bash tests/fixtures/make-test-images.sh "127.0.0.1:$plain" "$work/img1" >/dev/null \
   && bash tests/fixtures/make-test-images.sh "127.0.0.1:$authp" "$work/img2" tester:s3cret >/dev/null; then
  export HYPEMAN_TEST_REGISTRY="127.0.0.1:$plain" HYPEMAN_TEST_AUTH_REGISTRY="127.0.0.1:$authp" HYPEMAN_TEST_AUTH_CREDS=tester:s3cret
else
  echo "warning: local test registries could not start; registry integration tests will skip"
fi

# The guest kernel prepared by scripts/setup-guest-kernel.sh (the QEMU guest tests boot it).
[ -e /var/lib/hypeman-kernel/current/vmlinux ] && export HYPEMAN_KERNEL_DIR="${HYPEMAN_KERNEL_DIR:-/var/lib/hypeman-kernel}"
echo "== Swift tests"
timeout 1800 swift test ${SWIFT_TEST_FLAGS:-} 2>&1 | tee "$work/swift-test.log" | grep -E "^(✘|✔ Test run|Test Suite .*(passed|failed)|.*error:)|skipped|Skipping|skip" | tail -n 60
swift_status=${PIPESTATUS[0]}
echo "== Integration tests (pytest)"
HYPEMAN_BIN_DIR="$(swift build --show-bin-path)" python3 -m pytest -q -rs tests/ "$@"
py_status=$?
echo "swift test exit: $swift_status, pytest exit: $py_status"
[ "$swift_status" -eq 0 ] && [ "$py_status" -eq 0 ]
