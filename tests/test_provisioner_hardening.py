"""The Provisioner under hostile input, through the real stack (nginx, FastCGI, SQLite, the
Provisioner): a registry serving absurd sizes or a lying layer archive fails the image with a
clear error while the same Provisioner process goes on serving; a build interrupted by a crash
every time ends `failed` after JOB_MAX_ATTEMPTS starts instead of crash-looping; a second
Provisioner on the same data directory exits at once and leaves the first one's state alone."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from stack import Stack

HERE = Path(__file__).resolve().parent


def enc(name):
    return requests.utils.quote(name, safe="")


@pytest.fixture(scope="module")
def fake_registry():
    p = subprocess.Popen([sys.executable, str(HERE / "fixtures" / "fake-registry.py")], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    port = int(p.stdout.readline())
    yield f"127.0.0.1:{port}"
    p.kill()
    p.wait()


@pytest.fixture(scope="module")
def hstack(fake_registry):
    st = Stack(workers=1, threads=8)
    st.extra_env = {"INSECURE_REGISTRIES": f"{st.registry.hostport},{fake_registry}",
                    "JOB_MAX_ATTEMPTS": "3", "JOB_RETRY_BACKOFF_SECONDS": "0.2", "UPLOAD_SWEEP_SECONDS": "1"}
    st.start()
    st.push_test_images()
    yield st
    st.stop()


@pytest.fixture(scope="module")
def hauth(hstack):
    return {"Authorization": f"Bearer {hstack.token('tester')}"}


def wait_image(st, auth, name, states=("ready", "failed"), timeout=120):
    deadline = time.time() + timeout
    img = None
    while time.time() < deadline:
        g = requests.get(st.url + "/images/" + enc(name), headers=auth, timeout=10)
        if g.status_code == 200:
            img = g.json()
            if img["status"] in states:
                return img
        time.sleep(0.05)
    raise AssertionError(f"{name} did not reach {states}: {img}")


def post_image(st, auth, name):
    r = requests.post(st.url + "/images", json={"name": name}, headers=auth, timeout=60)
    assert r.status_code in (200, 202), r.text
    return r.json()


def provisioner(st):
    p = st.procs["provisioner"]
    assert p.poll() is None, "the provisioner died"
    return p.pid


def assert_clean_error(st, img):
    assert img["status"] == "failed", img
    err = img["error"] or ""
    assert str(st.data_dir) not in err and str(st.dir) not in err, err
    for errno_text in ("No such file", "Permission denied", "errno"):
        assert errno_text not in err, err
    return err


@pytest.mark.parametrize("repo,expect", [
    ("hostile/huge", "too large"),
    ("hostile/overflow", "too large"),
    ("hostile/negative", "negative size"),
])
def test_absurd_manifest_sizes_fail_the_image_not_the_provisioner(hstack, hauth, fake_registry, repo, expect):
    pid = provisioner(hstack)
    name = f"{fake_registry}/{repo}:latest"
    post_image(hstack, hauth, name)
    img = wait_image(hstack, hauth, name)
    err = assert_clean_error(hstack, img)
    assert expect in err and repo in err, err
    assert provisioner(hstack) == pid


def test_lying_layer_archive_fails_the_image_and_a_good_image_still_builds(hstack, hauth, fake_registry):
    pid = provisioner(hstack)
    name = f"{fake_registry}/hostile/tarbomb:latest"
    post_image(hstack, hauth, name)
    img = wait_image(hstack, hauth, name)
    err = assert_clean_error(hstack, img)
    assert "too large" in err and "more than" in err, err
    assert provisioner(hstack) == pid
    # Other work goes on in the same process.
    good = hstack.image("test/busybox:latest")
    post_image(hstack, hauth, good)
    assert wait_image(hstack, hauth, good)["status"] == "ready"
    assert provisioner(hstack) == pid


def test_second_provisioner_exits_at_once_and_changes_nothing(hstack, hauth):
    pid = provisioner(hstack)
    before = requests.get(hstack.url + "/images", headers=hauth, timeout=10).json()
    t0 = time.time()
    r = subprocess.run([str(hstack.bin / "hypeman-provisioner")], env=hstack.env(), capture_output=True, text=True, timeout=30)
    took = time.time() - t0
    assert r.returncode != 0
    assert took < 5, took
    assert f"pid {pid}" in r.stderr, r.stderr
    assert (hstack.data_dir / "provisioner.lock").read_text().strip() == str(pid)
    assert provisioner(hstack) == pid
    assert (hstack.run_dir / "provisioner.wake").exists()
    after = requests.get(hstack.url + "/images", headers=hauth, timeout=10).json()
    assert after == before
    # The first one still works.
    assert requests.get(hstack.url + "/images/" + enc(hstack.image("test/busybox:latest")), headers=hauth,
                        timeout=10).json()["status"] == "ready"


def test_build_interrupted_by_every_crash_ends_failed_after_the_cap(hstack, hauth, fake_registry):
    name = f"{fake_registry}/hostile/stall:latest"
    post_image(hstack, hauth, name)
    for attempt in range(3):
        # Each start claims the build again (after the backoff) and hangs in its layer download.
        wait_image(hstack, hauth, name, states=("pulling",), timeout=30)
        time.sleep(0.3)
        hstack.restart_provisioner(signal.SIGKILL)
    img = wait_image(hstack, hauth, name, timeout=30)
    assert img["status"] == "failed", img
    assert "interrupted 3 times" in img["error"], img
    # Not re-queued: it stays failed while the provisioner runs on.
    time.sleep(1.0)
    assert wait_image(hstack, hauth, name)["status"] == "failed"
    provisioner(hstack)
    # POST again retries from scratch (and would stall again): it is pending or pulling, not failed.
    post_image(hstack, hauth, name)
    assert wait_image(hstack, hauth, name, states=("pending", "pulling"), timeout=30)["status"] in ("pending", "pulling")


def lying_targz():
    """A gzip tar whose second entry's header claims 2^63-2 bytes (fake-registry.py's tarbomb layer)."""
    path = HERE / "fixtures" / "fake-registry.py"
    ns = {}
    exec(compile(path.read_text().split("# A parent")[0], str(path), "exec"), ns)
    return ns["TARBOMB"]


def test_lying_volume_archive_is_refused_and_the_provisioner_lives(hstack, hauth):
    pid = provisioner(hstack)
    r = requests.post(hstack.url + "/volumes", headers=hauth, timeout=120,
                      files={"name": (None, "liar"), "size_gb": (None, "1"), "content": ("data.tar.gz", lying_targz())})
    assert 400 <= r.status_code < 500, r.text
    body = r.json()
    assert body["code"] == "archive_too_large", body
    assert str(hstack.dir) not in body["message"], body
    assert provisioner(hstack) == pid
    names = [v["name"] for v in requests.get(hstack.url + "/volumes", headers=hauth, timeout=10).json()]
    assert "liar" not in names
    assert not list((hstack.data_dir / "uploads").glob("*.upload")), "staged upload removed"
    # The same provisioner still creates volumes.
    ok = requests.post(hstack.url + "/volumes", headers=hauth, json={"name": "fine", "size_gb": 1}, timeout=120)
    assert ok.status_code == 201, ok.text
    assert provisioner(hstack) == pid


def test_stale_staged_uploads_are_swept(hstack):
    uploads = hstack.data_dir / "uploads"
    uploads.mkdir(exist_ok=True)
    stale, fresh = uploads / "crashed.upload", uploads / "receiving.upload"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"still arriving")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    deadline = time.time() + 10
    while stale.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not stale.exists(), "a stale upload was not swept"
    assert fresh.exists(), "an upload still being written was swept"
    fresh.unlink()
