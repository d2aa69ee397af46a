#!/usr/bin/env bash
# setup-guest-kernel.sh DEST_DIR
#
# Prepares the guest kernel for hypeman microVMs from Debian's stock kernel package, without
# installing it and without running any initramfs hooks:
#
#   DEST_DIR/<kver>/vmlinux        uncompressed x86-64 ELF with the Xen PVH entry note (type 0x12),
#                                  extracted from the package's bzImage (xz, zstd or gzip payload)
#   DEST_DIR/<kver>/modules/       only the modules the guest init loads (and what they depend on),
#                                  decompressed to plain .ko, plus modules.dep (generated here from
#                                  each module's .modinfo, depmod format, .ko paths), modules.order
#                                  and modules.builtin copied from the package
#   DEST_DIR/<kver>/config         the kernel's build config, for reference
#   DEST_DIR/current -> <kver>
#
# Kernel choice: $KERNEL_VERSION if set (e.g. 6.1.0-56 or 6.12.117+deb12), else the newest
# installed-or-available linux-image-<version>-amd64 (generic flavour, not cloud/rt, not a meta
# package). Idempotent: a complete DEST_DIR/<kver> is left alone (only `current` is refreshed).
# Tools it needs (python3, zstd, xz-utils, apt) are installed with apt-get only when missing.
# It also checks that /bin/busybox is a static busybox (package busybox-static), which the
# initramfs builder copies into every initramfs.
#
# Exit codes: 0 ok, 1 usage, 2 a prerequisite is missing, 3 download/extract/validation failed.
set -euo pipefail

log() { printf 'setup-guest-kernel: %s\n' "$*" >&2; }
die() { local code=$1; shift; printf 'setup-guest-kernel: ERROR: %s\n' "$*" >&2; exit "$code"; }

# The modules the guest init wants (by module name). Those built into the kernel are skipped,
# those absent from this kernel are reported and skipped; their dependencies come along.
# Keep in sync with InitramfsBuilder.defaultModules (Sources/GuestBoot/InitramfsBuilder.swift).
WANTED_MODULES="virtio_mmio virtio_pci virtio_blk virtio_net virtio_console crc32c_generic crc16
  mbcache jbd2 ext4 overlay vsock vmw_vsock_virtio_transport virtio_mem button evdev"

[ $# -eq 1 ] || { echo "usage: $0 DEST_DIR" >&2; exit 1; }
DEST=$1
case "$(uname -m)" in x86_64) ;; *) die 2 "only x86_64 hosts are supported (this is $(uname -m))";; esac

apt_updated=0
ensure_tool() { # ensure_tool COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die 2 "'$1' is missing and apt-get is not available; install package $2"
  log "installing $2 (for $1) with apt-get"
  if [ $apt_updated -eq 0 ]; then apt-get update -qq >&2 || die 2 "apt-get update failed"; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2 \
    || die 2 "apt-get install $2 failed"
}
ensure_tool python3 python3
ensure_tool zstd zstd
ensure_tool xz xz-utils
ensure_tool dpkg dpkg
ensure_tool apt-get apt

# busybox-static: checked, not installed (installing it replaces the dynamic 'busybox' package).
if [ ! -x /bin/busybox ]; then
  die 2 "/bin/busybox is missing; install it with: apt-get install busybox-static"
fi
if ! python3 - /bin/busybox <<'EOF'
import sys, struct
d = open(sys.argv[1], 'rb').read(1 << 16)
if d[:4] != b'\x7fELF' or d[4] != 2: sys.exit(1)
phoff, = struct.unpack_from('<Q', d, 0x20); phentsize, phnum = struct.unpack_from('<HH', d, 0x36)
for i in range(phnum):
    if struct.unpack_from('<I', d, phoff + i * phentsize)[0] == 3: sys.exit(1)   # PT_INTERP: dynamic
EOF
then
  die 2 "/bin/busybox is not a static binary; install it with: apt-get install busybox-static"
fi

# ---- pick the kernel version ----------------------------------------------------------------
is_plain_kver() { [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+[-+][A-Za-z0-9.+~]+$ ]]; }
has_candidate() { # installed, or apt has a candidate version to download
  [ -d "/lib/modules/$1-amd64/kernel" ] && [ -f "/boot/vmlinuz-$1-amd64" ] && return 0
  local policy
  policy=$(apt-cache policy "linux-image-$1-amd64" 2>/dev/null) || return 1
  printf '%s\n' "$policy" | grep '^  Candidate: [^(]' >/dev/null   # no -q: with pipefail, SIGPIPE would fail it
}
pick_version() {
  local names v
  names=$( { apt-cache pkgnames linux-image- 2>/dev/null || true
             dpkg-query -W -f '${Package}\n' 'linux-image-*' 2>/dev/null || true; } \
           | sed -n 's/^linux-image-\(.*\)-amd64$/\1/p' | grep -v -e '-cloud$' -e '-rt$' | sort -u | sort -rV)
  for v in $names; do
    is_plain_kver "$v" || continue          # skips meta packages such as linux-image-6.12-amd64
    if has_candidate "$v"; then printf '%s' "$v"; return 0; fi
  done
}
KVER_BASE=${KERNEL_VERSION:-}
KVER_BASE=${KVER_BASE%-amd64}
if [ -z "$KVER_BASE" ]; then
  KVER_BASE=$(pick_version)
  if [ -z "$KVER_BASE" ]; then
    log "no linux-image-*-amd64 package known to apt; running apt-get update"
    apt-get update -qq >&2 || die 2 "apt-get update failed"
    KVER_BASE=$(pick_version)
  fi
  [ -n "$KVER_BASE" ] || die 3 "no linux-image-<version>-amd64 package is installed or available from apt"
fi
is_plain_kver "$KVER_BASE" || die 1 "KERNEL_VERSION '$KVER_BASE' does not look like 6.1.0-56 or 6.12.117+deb12"
KVER="$KVER_BASE-amd64"
PKG="linux-image-$KVER"
log "kernel: $KVER (package $PKG)"

mkdir -p "$DEST" || die 3 "cannot create $DEST"
DEST=$(cd "$DEST" && pwd)
OUT="$DEST/$KVER"
if [ -f "$OUT/.complete" ] && [ -f "$OUT/vmlinux" ] && [ -f "$OUT/modules/modules.dep" ]; then
  log "already prepared: $OUT (delete it to redo)"
  ln -sfn "$KVER" "$DEST/current"
  log "current -> $KVER"
  exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/hypeman-kernel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
mkdir -p "$ROOT"

if [ -f "/boot/vmlinuz-$KVER" ] && [ -d "/lib/modules/$KVER/kernel" ]; then
  log "using the installed kernel from /boot and /lib/modules"
  mkdir -p "$ROOT/boot" "$ROOT/lib/modules"
  cp "/boot/vmlinuz-$KVER" "$ROOT/boot/"
  [ -f "/boot/config-$KVER" ] && cp "/boot/config-$KVER" "$ROOT/boot/"
  ln -s "/lib/modules/$KVER" "$ROOT/lib/modules/$KVER"
else
  log "downloading $PKG with apt-get download"
  DL="$WORK/dl"
  mkdir -p "$DL"
  id _apt >/dev/null 2>&1 && chown _apt "$DL" && chmod 755 "$WORK"   # lets apt fetch sandboxed
  ( cd "$DL" && apt-get download "$PKG" >&2 ) || {
    log "download failed; retrying after apt-get update"
    apt-get update -qq >&2 || true
    ( cd "$DL" && apt-get download "$PKG" >&2 ) || die 3 "apt-get download $PKG failed"
  }
  DEB=$(ls "$DL"/*.deb 2>/dev/null | head -n1 || true)
  [ -n "$DEB" ] || die 3 "apt-get download produced no .deb"
  log "extracting $(basename "$DEB") with dpkg -x (no maintainer scripts, no initramfs hooks)"
  dpkg -x "$DEB" "$ROOT" || die 3 "dpkg -x failed"
fi
VMLINUZ="$ROOT/boot/vmlinuz-$KVER"
MODSRC="$ROOT/lib/modules/$KVER"
[ -f "$VMLINUZ" ] || die 3 "the package has no boot/vmlinuz-$KVER"
[ -d "$MODSRC/kernel" ] || die 3 "the package has no lib/modules/$KVER/kernel"

STAGE="$WORK/out"
mkdir -p "$STAGE/modules"

log "extracting the uncompressed vmlinux from the bzImage"
python3 - "$VMLINUZ" "$STAGE/vmlinux" <<'EOF' || die 3 "could not extract a PVH vmlinux from $VMLINUZ"
import sys, struct, subprocess, lzma, zlib
src, dst = sys.argv[1], sys.argv[2]
d = open(src, 'rb').read()
def fail(msg):
    print('  ' + msg, file=sys.stderr); sys.exit(1)
if d[0x202:0x206] != b'HdrS':
    fail('not a bzImage (no HdrS at 0x202)')
setup_sects = d[0x1f1] or 4
pm_start = (setup_sects + 1) * 512
payload_offset, payload_length = struct.unpack_from('<II', d, 0x248)
payload = d[pm_start + payload_offset: pm_start + payload_offset + payload_length]
if payload[:6] == b'\xfd7zXZ\x00':
    kind = 'xz'
    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
elif payload[:4] == b'\x28\xb5\x2f\xfd':
    kind = 'zstd'
    # The kernel build appends the uncompressed size (le32) after the zstd frame.
    out = subprocess.run(['zstd', '-d', '-c', '-q'], input=payload[:-4], stdout=subprocess.PIPE, check=True).stdout
elif payload[:2] == b'\x1f\x8b':
    kind = 'gzip'
    out = zlib.decompressobj(31).decompress(payload)
else:
    fail('unsupported payload compression (magic %s)' % payload[:6].hex())
size_hint, = struct.unpack_from('<I', payload, len(payload) - 4)
if size_hint != len(out) & 0xffffffff:
    print('  note: appended size %d != decompressed %d' % (size_hint, len(out)), file=sys.stderr)
# Validate: ELF64, little endian, x86-64 executable, with a PT_NOTE holding Xen note 0x12.
if out[:4] != b'\x7fELF' or out[4] != 2 or out[5] != 1:
    fail('payload is not a 64-bit little-endian ELF')
e_type, e_machine = struct.unpack_from('<HH', out, 16)
if e_type != 2 or e_machine != 62:
    fail('ELF is not an x86-64 executable (type %d machine %d)' % (e_type, e_machine))
phoff, = struct.unpack_from('<Q', out, 0x20)
phentsize, phnum = struct.unpack_from('<HH', out, 0x36)
pvh = None
for i in range(phnum):
    p_type, _flags, p_offset = struct.unpack_from('<IIQ', out, phoff + i * phentsize)
    p_filesz, = struct.unpack_from('<Q', out, phoff + i * phentsize + 32)
    if p_type != 4:
        continue
    off, end = p_offset, p_offset + p_filesz
    while off + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from('<III', out, off)
        name = out[off + 12: off + 12 + namesz].rstrip(b'\0')
        desc_off = off + 12 + ((namesz + 3) & ~3)
        if name == b'Xen' and ntype == 0x12:
            pvh = struct.unpack_from('<I' if descsz == 4 else '<Q', out, desc_off)[0]
        off = desc_off + ((descsz + 3) & ~3)
if pvh is None:
    fail('ELF has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); the kernel needs CONFIG_PVH=y')
open(dst, 'wb').write(out)
print('  %s payload, vmlinux %.1f MB, PVH entry 0x%x' % (kind, len(out) / 1e6, pvh), file=sys.stderr)
EOF

log "selecting modules: $(echo $WANTED_MODULES)"
python3 - "$MODSRC" "$STAGE/modules" $WANTED_MODULES <<'EOF' || die 3 "module selection failed"
import sys, os, lzma, subprocess, struct
src, dst, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
def norm(n): return n.replace('-', '_')
def modname(rel):
    b = os.path.basename(rel)
    for s in ('.ko.xz', '.ko.zst', '.ko.gz', '.ko'):
        if b.endswith(s): return norm(b[:-len(s)])
    return None
def plain(rel):
    for s in ('.xz', '.zst', '.gz'):
        if rel.endswith(s): return rel[:-len(s)]
    return rel
files = {}
for dirpath, _, names in os.walk(os.path.join(src, 'kernel'), followlinks=True):
    for n in names:
        rel = os.path.relpath(os.path.join(dirpath, n), src)
        m = modname(rel)
        if m: files[m] = rel
builtin = set()
bpath = os.path.join(src, 'modules.builtin')
if os.path.exists(bpath):
    for line in open(bpath):
        m = modname(line.strip())
        if m: builtin.add(m)
def read_ko(rel):
    p = os.path.join(src, rel)
    raw = open(p, 'rb').read()
    if rel.endswith('.xz'): return lzma.decompress(raw)
    if rel.endswith('.zst'):
        return subprocess.run(['zstd', '-d', '-c', '-q'], input=raw, stdout=subprocess.PIPE, check=True).stdout
    if rel.endswith('.gz'):
        import gzip; return gzip.decompress(raw)
    return raw
def modinfo(data):
    if data[:4] != b'\x7fELF' or data[4] != 2: raise ValueError('not an ELF64 module')
    shoff, = struct.unpack_from('<Q', data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3a)
    def sh(i):
        name, _t, _f, _a, off, size = struct.unpack_from('<IIQQQQ', data, shoff + i * shentsize)
        return name, off, size
    _, stroff, _ = sh(shstrndx)
    for i in range(shnum):
        name, off, size = sh(i)
        end = data.index(b'\0', stroff + name)
        if data[stroff + name:end] == b'.modinfo':
            info = {}
            for kv in data[off:off + size].split(b'\0'):
                if b'=' in kv:
                    k, v = kv.split(b'=', 1)
                    info.setdefault(k.decode(), []).append(v.decode(errors='replace'))
            return info
    return {}
deps, blobs = {}, {}
def visit(m):
    if m in deps: return
    data = read_ko(files[m])
    blobs[m] = data
    info = modinfo(data)
    ds = [norm(x) for x in ','.join(info.get('depends', [''])).split(',') if x]
    deps[m] = ds
    for d in ds:
        if d not in files: raise SystemExit('module %s depends on %s, which is not in the package' % (m, d))
        visit(d)
selected, skipped_builtin, missing = [], [], []
for w in map(norm, wanted):
    if w in files: visit(w); selected.append(w)
    elif w in builtin: skipped_builtin.append(w)
    else: missing.append(w)
# depmod format: "path: all transitive deps", listed so that loading them from last to first works.
def closure(m):
    order, seen = [], set()
    def dfs(x):
        for d in deps[x]:
            if d not in seen:
                seen.add(d); dfs(d); order.append(d)
    dfs(m)
    return list(reversed(order))
with open(os.path.join(dst, 'modules.dep'), 'w') as f:
    for m in sorted(deps, key=lambda x: files[x]):
        rel = plain(files[m])
        out = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, 'wb') as o: o.write(blobs[m])
        f.write('%s:%s\n' % (rel, ''.join(' ' + plain(files[d]) for d in closure(m))))
for name in ('modules.order', 'modules.builtin'):
    p = os.path.join(src, name)
    if os.path.exists(p):
        with open(p) as i, open(os.path.join(dst, name), 'w') as o:
            for line in i: o.write(plain(line.strip()) + '\n')
print('  %d module files (%.1f MB); built in: %s; not in this kernel: %s' % (
    len(deps), sum(map(len, blobs.values())) / 1e6, ' '.join(skipped_builtin) or '-', ' '.join(missing) or '-'),
    file=sys.stderr)
EOF

[ -f "$ROOT/boot/config-$KVER" ] && cp "$ROOT/boot/config-$KVER" "$STAGE/config"
echo "$KVER" > "$STAGE/.complete"

rm -rf "$OUT.tmp"
mv "$STAGE" "$OUT.tmp"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
ln -sfn "$KVER" "$DEST/current"
log "done: $OUT (vmlinux $(du -h "$OUT/vmlinux" | cut -f1), modules $(du -sh "$OUT/modules" | cut -f1)); current -> $KVER"
