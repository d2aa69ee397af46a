"""Images through the API from a real local registry (Debian's docker-registry on 127.0.0.1):
status progression with byte progress, the disk's contents (read with debugfs, no mount),
whiteouts, platform selection, errors, one build per digest, garbage collection."""
import shutil
import subprocess
import time

import pytest
import requests

from openapi_validate import check_http_response


def enc(name):
    return requests.utils.quote(name, safe="")


def pull(stack, auth, name, timeout=120):
    r = requests.post(stack.url + "/images", json={"name": name}, headers=auth, timeout=60)
    check_http_response(r)
    assert r.status_code == 202, r.text
    first = r.json()
    statuses = [first["status"]]
    deadline = time.time() + timeout
    while time.time() < deadline:
        g = requests.get(stack.url + "/images/" + enc(name), headers=auth)
        check_http_response(g)
        img = g.json()
        if img["status"] != statuses[-1]:
            statuses.append(img["status"])
        if img["status"] in ("ready", "failed"):
            return first, img, statuses
        time.sleep(0.05)
    raise AssertionError(f"{name} did not finish: {statuses}")


def debugfs(disk, cmd):
    return subprocess.run(["debugfs", "-R", cmd, disk], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def images(stack):
    stack.push_test_images()


def test_pull_busybox_to_ready_disk(stack, auth, images):
    name = stack.image("test/busybox:latest")
    first, img, statuses = pull(stack, auth, name)
    assert first["digest"].startswith("sha256:") and first["name"] == name
    assert img["status"] == "ready", img
    order = ["pending", "pulling", "converting", "ready"]
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses), statuses
    assert img["entrypoint"] == ["/bin/sh"] and img["cmd"] == ["/app.sh"]
    assert img["env"]["GREETING"] == "hello" and img["working_dir"] == "/srv"
    assert img["progress"]["bytes_total"] > 0 and img["progress"]["bytes_done"] == img["progress"]["bytes_total"]
    assert img["size_bytes"] > 1 << 20 and img["queue_position"] is None and img["error"] is None
    disk = next((stack.data_dir / "images").glob(f"{img['digest'].split(':')[1]}/rootfs.ext4"))
    assert disk.stat().st_size == img["size_bytes"]
    assert "hello from app.sh" in debugfs(str(disk), "cat /app.sh")
    assert "busybox" in debugfs(str(disk), "ls -l /bin")
    assert subprocess.run(["e2fsck", "-fn", str(disk)], capture_output=True).returncode == 0
    # By digest and by the short form; POST again is the same digest and no new build.
    assert requests.get(stack.url + "/images/" + enc(name.rsplit(":", 1)[0] + "@" + img["digest"]), headers=auth).status_code == 200
    again = requests.post(stack.url + "/images", json={"name": name}, headers=auth).json()
    assert again["digest"] == img["digest"] and again["status"] == "ready"
    assert any(i["name"] == name for i in requests.get(stack.url + "/images", headers=auth).json())


def test_whiteouts_and_opaque_directories(stack, auth, images):
    _, img, _ = pull(stack, auth, stack.image("test/layers:latest"))
    assert img["status"] == "ready", img
    disk = str(next((stack.data_dir / "images").glob(f"{img['digest'].split(':')[1]}/rootfs.ext4")))
    root = debugfs(disk, "ls -l /")
    assert "keep" in root and "layer3" in root and "old-dir" not in root
    assert "layer 2" in debugfs(disk, "cat /keep")
    assert "removed-file" not in debugfs(disk, "ls -l /etc")
    opaque = debugfs(disk, "ls -l /opaque")
    assert "new" in opaque and "lower-a" not in opaque and "sub" not in opaque
    assert ".wh." not in root + opaque


def test_index_picks_linux_amd64(stack, auth, images):
    _, img, _ = pull(stack, auth, stack.image("test/multi:latest"))
    assert img["status"] == "ready" and img["env"]["ARCH_MARK"] == "amd64"


def test_docker_v2s2_and_zstd_layers(stack, auth, images):
    for tag in ("v2s2", "zstd"):
        _, img, _ = pull(stack, auth, stack.image(f"test/busybox:{tag}"))
        assert img["status"] == "ready", img


def test_errors(stack, auth, images):
    r = requests.post(stack.url + "/images", json={"name": stack.image("test/busybox:no-such-tag")}, headers=auth)
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    r = requests.post(stack.url + "/images", json={"name": stack.image("test/nothing-here:latest")}, headers=auth)
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    r = requests.post(stack.url + "/images", json={"name": "Invalid::Name"}, headers=auth)
    assert (r.status_code, r.json()["code"]) == (400, "invalid_name")
    # A registry that does not answer: a clear error in bounded time, nothing recorded.
    t0 = time.time()
    r = requests.post(stack.url + "/images", json={"name": "127.0.0.1:1/nobody/home:latest"}, headers=auth, timeout=60)
    assert r.status_code in (503, 504) and r.json()["code"] in ("unavailable", "timeout"), r.text
    assert time.time() - t0 < 40
    assert requests.get(stack.url + "/images/" + enc("127.0.0.1:1/nobody/home:latest"), headers=auth).status_code == 404


def test_delete_and_garbage_collection(stack, auth, images):
    name = stack.image("test/busybox:latest")
    _, img, _ = pull(stack, auth, name)
    hexd = img["digest"].split(":")[1]
    names = [i["name"] for i in requests.get(stack.url + "/images", headers=auth).json() if i["digest"] == img["digest"]]
    for n in names:
        assert requests.delete(stack.url + "/images/" + enc(n), headers=auth).status_code == 204
    deadline = time.time() + 20
    while time.time() < deadline and (stack.data_dir / "images" / hexd).exists():
        time.sleep(0.1)
    assert not (stack.data_dir / "images" / hexd).exists(), "unused disk collected"
    assert requests.get(stack.url + "/images/" + enc(name), headers=auth).status_code == 404
    # Pulling again rebuilds it.
    _, img2, _ = pull(stack, auth, name)
    assert img2["status"] == "ready" and img2["digest"] == img["digest"]
