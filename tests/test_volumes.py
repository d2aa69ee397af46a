"""Volumes from archives (multipart POST /volumes and POST /volumes/from-archive) with the
extraction hardening: traversal, absolute paths, escaping symlinks and hard links, devices,
tar bombs and lying sizes. Disks are read with debugfs (no mount)."""
import gzip
import io
import subprocess
import tarfile

import requests

from openapi_validate import check_http_response


def targz(entries):
    """entries: (name, kind, data_or_target) with kind file|dir|symlink|hardlink|chr|fifo."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mode = 0o644
            if kind == "file":
                b = data.encode() if isinstance(data, str) else data
                ti.size = len(b)
                t.addfile(ti, io.BytesIO(b))
                continue
            ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                       "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                ti.linkname = data
            if kind == "chr":
                ti.devmajor, ti.devminor = 1, 1
            if kind == "dir":
                ti.mode = 0o755
            t.addfile(ti)
    return gzip.compress(raw.getvalue())


def post_multipart(stack, auth, name, archive, size_gb=1):
    r = requests.post(stack.url + "/volumes", headers=auth, timeout=120,
                      files={"name": (None, name), "size_gb": (None, str(size_gb)), "content": ("data.tar.gz", archive)})
    check_http_response(r)
    return r


def debugfs(path, cmd):
    return subprocess.run(["debugfs", "-R", cmd, str(path)], capture_output=True, text=True).stdout


def test_volume_from_multipart_archive(stack, auth):
    arc = targz([("data", "dir", None), ("data/hello.txt", "file", "hello volume\n"), ("data/link", "symlink", "hello.txt"),
                 ("data/hard", "hardlink", "data/hello.txt"), ("dev-null", "chr", None), ("pipe", "fifo", None),
                 (".wh.looks-like-a-whiteout", "file", "kept as a file\n")])
    r = post_multipart(stack, auth, "from-archive", arc)
    assert r.status_code == 201, r.text
    vol = r.json()
    assert vol["size_gb"] == 1 and vol["name"] == "from-archive"
    disk = stack.data_dir / "volumes" / vol["id"] / "data.raw"
    assert debugfs(disk, "cat /data/hello.txt") == "hello volume\n"
    assert "hello.txt" in debugfs(disk, "stat /data/link")
    listing = debugfs(disk, "ls -l /")
    assert "dev-null" not in listing and "pipe" not in listing, "devices and FIFOs are skipped"
    assert ".wh.looks-like-a-whiteout" in listing
    assert not list((stack.data_dir / "volumes" / vol["id"]).glob("extract*")), "scratch directory removed"
    assert not list((stack.data_dir / "uploads").glob("*")), "staged upload removed"
    assert requests.delete(stack.url + f"/volumes/{vol['id']}", headers=auth).status_code == 204


def test_volume_from_raw_archive_like_the_sdk(stack, client):
    vol = client.volumes.create_from_archive(targz([("a.txt", "file", "via sdk\n")]), name="sdk-archive", size_gb=1)
    assert vol.size_gb == 1
    assert debugfs(stack.data_dir / "volumes" / vol.id / "data.raw", "cat /a.txt") == "via sdk\n"
    client.volumes.delete(vol.id)


def test_hostile_archives_are_rejected_and_leave_nothing(stack, auth):
    before = sorted(p.name for p in (stack.data_dir / "volumes").iterdir())
    hostile = {
        "traversal": [("../escape", "file", "x")],
        "nested traversal": [("a/../../escape", "file", "x")],
        "absolute path": [("/etc/owned", "file", "x")],
        "absolute symlink": [("link", "symlink", "/etc/passwd")],
        "escaping symlink": [("d", "dir", None), ("d/link", "symlink", "../../etc")],
        "escaping hardlink": [("h", "hardlink", "../../etc/passwd")],
        "hardlink to nothing": [("h", "hardlink", "missing")],
    }
    for what, entries in hostile.items():
        r = post_multipart(stack, auth, "hostile", targz(entries))
        assert r.status_code == 400, (what, r.text)
        assert r.json()["code"] == "invalid_request", (what, r.text)
    # A header that claims more data than the archive carries.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        ti = tarfile.TarInfo("liar")
        ti.size = 10_000
        t.addfile(ti, io.BytesIO(b"x" * 10_000))
    lying = gzip.compress(raw.getvalue()[:512 + 100])
    r = post_multipart(stack, auth, "liar", lying)
    assert r.status_code == 400, r.text
    # Not gzip at all.
    r = post_multipart(stack, auth, "junk", b"this is not an archive")
    assert r.status_code == 400, r.text
    assert sorted(p.name for p in (stack.data_dir / "volumes").iterdir()) == before
    assert not any(v["name"] in ("hostile", "liar", "junk") for v in requests.get(stack.url + "/volumes", headers=auth).json())


def test_tar_bomb_is_stopped_by_size_gb(stack, auth):
    # 1 GiB + 1 byte of zeros compresses to about 1 MB; size_gb=1 must stop it.
    zeros = subprocess.run("head -c 1073741825 /dev/zero > /tmp/hm-bomb && tar -C /tmp -cf - hm-bomb | gzip -1 && rm -f /tmp/hm-bomb",
                           shell=True, capture_output=True, check=True).stdout
    r = post_multipart(stack, auth, "bomb", zeros, size_gb=1)
    assert (r.status_code, r.json()["code"]) == (400, "archive_too_large"), r.text
