#!/usr/bin/env bash
# Installs every Debian and PyPI package the project needs to build, run and test.
# Idempotent; safe to run on a fresh Debian 12 machine as root.
set -euo pipefail
APT_PACKAGES=(
  pkg-config libfcgi-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev libarchive-dev
  nginx libnginx-mod-http-perl libjson-xs-perl openssl
  docker-registry skopeo umoci busybox-static e2fsprogs erofs-utils cpio zstd xz-utils
  qemu-system-x86 iproute2 iptables sqlite3 wrk curl jq procps
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's nginx package starts a default site on :80 when systemd runs it; we never use it.
PIP_PACKAGES=(hypeman==0.1.0 pytest requests pyyaml jsonschema openapi-spec-validator schemathesis==4.32.5)
python3 -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
echo "deps: ok"
