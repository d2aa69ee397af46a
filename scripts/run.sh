#!/usr/bin/env bash
# Sets up and runs the whole service on this machine, on loopback: installs packages, builds
# release binaries, prepares the guest kernel, starts a local OCI registry with a sample image,
# the Provisioner, FastCGI workers and nginx. Prints the URL, a token and a sample request.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
swift build -c release 2>&1 | tail -n 2
if [ -x scripts/setup-guest-kernel.sh ] || [ -f scripts/setup-guest-kernel.sh ]; then
  bash scripts/setup-guest-kernel.sh "${HYPEMAN_KERNEL_DIR:-/var/lib/hypeman-kernel}" || echo "warning: guest kernel setup failed; VMs cannot boot"
fi
export HYPEMAN_BIN_DIR="$(swift build -c release --show-bin-path)"
# Guest networking lives in a namespace of its own here (bridge, TAPs; no NAT to this machine's
# uplink): reach guests with `ip netns exec hypeman-demo curl http://<guest ip>/`.
ip netns add hypeman-demo 2>/dev/null || true
export HYPEMAN_NETWORK=on NETWORK_NETNS=hypeman-demo SUBNET_CIDR="${SUBNET_CIDR:-10.100.0.0/16}"
exec python3 tests/stack.py up --port "${PORT:-8080}"
