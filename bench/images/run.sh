#!/usr/bin/env bash
# Image pipeline benchmark (and OCIImageService end-to-end self-test).
#   bench/images/run.sh            # bench: ~100 MB 3-layer image, ours vs skopeo+umoci+mkfs.ext4
#   bench/images/run.sh selftest   # build/record/GC/failure checks of OCIImageService on the test images
# Starts its own registry on 127.0.0.1:$PORT (default 5077) under a scratch dir and stops it at the end.
# Our side is a small driver (Driver/main.swift) built in a scratch SwiftPM package whose targets are
# symlinks to this repository's Sources (until the package declares an executable for it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mode=${1:-bench}
port=${PORT:-5077}
scratch=${SCRATCH:-$(mktemp -d /tmp/hm-bench-images.XXXXXX)}
reg=127.0.0.1:$port
cleanup() { "$repo/tests/fixtures/registry.sh" stop "$port" "$scratch/registry" || true; [ -n "${KEEP:-}" ] || rm -rf "$scratch"; }
trap cleanup EXIT

# --- the driver package ----------------------------------------------------------------------------
pkg=$scratch/pkg
mkdir -p "$pkg/Sources/ProvisionerImages" "$pkg/Sources/Driver"
for t in CCurl CCrypto CArchive Digest HTTPFetch Model OCI Disk; do ln -s "$repo/Sources/$t" "$pkg/Sources/$t"; done
ln -s "$repo/Sources/ProvisionerCore/Images/ImageService.swift" "$pkg/Sources/ProvisionerImages/ImageService.swift"
ln -s "$repo/Sources/ProvisionerCore/Images/OCIImageService.swift" "$pkg/Sources/ProvisionerImages/OCIImageService.swift"
ln -s "$here/Driver/main.swift" "$pkg/Sources/Driver/main.swift"
cat > "$pkg/Package.swift" <<'SWIFT'
// swift-tools-version:6.0
import PackageDescription
let package = Package(name: "images-bench", targets: [
    .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl"),
    .systemLibrary(name: "CCrypto", path: "Sources/CCrypto", pkgConfig: "libcrypto"),
    .systemLibrary(name: "CArchive", path: "Sources/CArchive", pkgConfig: "libarchive"),
    .target(name: "Model", exclude: ["README.md"]),
    .target(name: "Digest", dependencies: ["CCrypto"], exclude: ["README.md"]),
    .target(name: "HTTPFetch", dependencies: ["CCurl", "Digest"], exclude: ["README.md"]),
    .target(name: "OCI", dependencies: ["HTTPFetch", "Digest", "CArchive", "Model"], exclude: ["README.md"]),
    .target(name: "Disk", dependencies: ["Model"], exclude: ["README.md"]),
    .target(name: "ProvisionerImages", dependencies: ["Model", "OCI", "Disk"]),
    .executableTarget(name: "Driver", dependencies: ["ProvisionerImages", "OCI", "Model"]),
])
SWIFT
echo "building the driver (release)…"
swift build -c release --package-path "$pkg" --scratch-path "${DRIVER_BUILD:-$repo/.build-images-bench}" --product Driver >"$scratch/build.log" 2>&1 \
    || { cat "$scratch/build.log"; exit 1; }
driver=${DRIVER_BUILD:-$repo/.build-images-bench}/release/Driver

"$repo/tests/fixtures/registry.sh" start "$port" "$scratch/registry"

if [ "$mode" = selftest ]; then
    "$repo/tests/fixtures/make-test-images.sh" "$reg" "$scratch/images" >/dev/null
    "$driver" selftest "$scratch/data" "$reg"
    exit 0
fi

# --- a ~100 MB image in 3 layers ------------------------------------------------------------------
work=$scratch/img; mkdir -p "$work"; cd "$work"
mkdir -p l1/bin l1/etc l1/tmp l2/usr/lib l3/usr/lib
cp /bin/busybox l1/bin/; for a in $(l1/bin/busybox --list-full); do [ "$a" = bin/busybox ] || { mkdir -p "l1/$(dirname "$a")"; ln -sf /bin/busybox "l1/$a"; }; done
cp -a /usr/lib/python3 l2/usr/lib/
cp -a /usr/lib/python3.11 l3/usr/lib/ 2>/dev/null || cp -a /usr/share/perl l3/usr/lib/
umoci init --layout oci >/dev/null; umoci new --image oci:big
for l in l1 l2 l3; do umoci insert --image oci:big "$l" / >/dev/null; done
umoci config --image oci:big --config.cmd /bin/sh --os linux --architecture amd64 >/dev/null
umoci gc --layout oci
skopeo copy -q --dest-tls-verify=false oci:"$work/oci":big docker://"$reg"/bench/big:latest
content=$(du -sb l1 l2 l3 | awk '{s+=$1} END {print s}')
layers=$(skopeo inspect --tls-verify=false docker://"$reg"/bench/big:latest | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["Layers"]))')
echo "image: $layers layers, $((content / 1000000)) MB unpacked"

sync
# (a) ours: resolve + pull (3 layers in parallel) + unpack + ext4, cold cache
t0=$(date +%s.%N)
"$driver" build "$scratch/data" "$reg" "$reg/bench/big:latest"
t1=$(date +%s.%N)
ours=$(echo "$t1 - $t0" | bc)

sync
# (b) skopeo copy + umoci unpack + mkfs.ext4 -d, cold
t0=$(date +%s.%N)
skopeo copy -q --src-tls-verify=false docker://"$reg"/bench/big:latest oci:"$scratch/ref-oci":big
umoci unpack --image "$scratch/ref-oci":big "$scratch/bundle" >/dev/null
used=$(du -sb "$scratch/bundle/rootfs" | cut -f1)
size=$(( (used * 3 / 2 / 1048576 + 16) ))M
mkfs.ext4 -q -F -b 4096 -O ^has_journal -d "$scratch/bundle/rootfs" "$scratch/ref.ext4" "$size"
t1=$(date +%s.%N)
theirs=$(echo "$t1 - $t0" | bc)

printf 'ours (pull+unpack+ext4):                 %.2f s\n' "$ours"
printf 'skopeo copy + umoci unpack + mkfs.ext4:  %.2f s\n' "$theirs"
printf 'ratio: %.2fx\n' "$(echo "$theirs / $ours" | bc -l)"
