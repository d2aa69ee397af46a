"""The whole request path over HTTP: real nginx (our config), FastCGI workers, SQLite, the
Provisioner. Every response is checked against our /openapi.yaml."""
import concurrent.futures as cf
import json
import os
import signal
import sqlite3
import time
import uuid

import pytest
import requests

from openapi_validate import check_http_response


def call(stack, auth, method, path, **kw):
    r = requests.request(method, stack.url + path, headers={**auth, **kw.pop("headers", {})}, timeout=60, **kw)
    if r.status_code not in (401,) and not path.startswith("/_"):
        check_http_response(r)
    return r


def err(r):
    body = r.json()
    assert set(body) >= {"code", "message"}, body
    return r.status_code, body["code"]


def seed_ready_image(stack, name="docker.io/library/seed:latest"):
    """A ready image row, as the Provisioner writes it after a build (the VM side is not under test here)."""
    digest = "sha256:" + uuid.uuid4().hex * 2
    db = sqlite3.connect(stack.db_path, timeout=10)
    now = "2026-01-01T00:00:00.000000Z"
    with db:
        db.execute("INSERT INTO image_builds(digest, repository, source_ref, status, size_bytes, disk_path, entrypoint, env,"
                   " platform, queue_seq, created_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,0,?,?)",
                   (digest, name.rsplit(":", 1)[0], name, "ready", 4096, "/nonexistent", '["/bin/sh"]', '{"A":"1"}',
                    "linux/amd64", now, now))
        db.execute("INSERT OR REPLACE INTO images(name, digest, created_at) VALUES(?,?,?)", (name, digest, now))
    db.close()
    return name, digest


def test_health_open_and_openapi_served(stack):
    r = requests.get(stack.url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    spec = requests.get(stack.url + "/openapi.yaml")
    assert spec.status_code == 200 and spec.text.startswith("openapi: 3.1")
    assert requests.get(stack.https_url + "/health", verify=False).json() == {"status": "ok"}


def test_unknown_route_and_method_are_json(stack, auth):
    r = requests.get(stack.url + "/does-not-exist", headers=auth)
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    r = requests.put(stack.url + "/instances", headers=auth)
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_instance_create_validation(stack, auth):
    cases = [
        ({"image": "alpine"}, 400, "Bad Request"),
        ({"name": "UPPER", "image": "alpine"}, 400, "Bad Request"),
        ({"name": "a" * 64, "image": "alpine"}, 400, "Bad Request"),
        ({"name": "ok", "image": "alpine", "size": "1.5GB"}, 400, "invalid_size"),
        ({"name": "ok", "image": "alpine", "hotplug_size": "x"}, 400, "invalid_hotplug_size"),
        ({"name": "ok", "image": "alpine", "overlay_size": "9Mb"}, 400, "invalid_overlay_size"),
        ({"name": "ok", "image": "invalid::"}, 400, "invalid_name"),
        ({"name": "ok", "image": "never-pulled"}, 404, "not_found"),
        ({"name": "ok", "image": "alpine", "vcpus": 1000}, 400, "limit_exceeded"),
        ({"name": "ok", "image": "alpine", "env": {"A B": "x"}}, 400, "Bad Request"),
        ({"name": "ok", "image": "alpine", "volumes": [{"volume_id": "v", "mount_path": "/proc/x"}]}, 400, "Bad Request"),
    ]
    for body, status, code in cases:
        r = call(stack, auth, "POST", "/instances", json=body)
        assert err(r) == (status, code), (body, r.text)
    r = call(stack, auth, "POST", "/instances", data="{not json", headers={"Content-Type": "application/json"})
    assert err(r) == (400, "Bad Request")


def test_create_with_unknown_volume_is_404_and_leaves_nothing(stack, auth):
    name, _ = seed_ready_image(stack, "docker.io/library/volcheck:latest")
    before = call(stack, auth, "GET", "/instances").json()
    r = call(stack, auth, "POST", "/instances", json={"name": "volx", "image": "volcheck",
                                                        "volumes": [{"volume_id": "missing", "mount_path": "/data"}]})
    assert err(r) == (404, "not_found")
    assert call(stack, auth, "GET", "/instances").json() == before


def test_failed_create_says_why_and_rolls_back(stack, auth):
    """A create the host cannot carry out answers with a clear error and leaves nothing behind."""
    seed_ready_image(stack, "docker.io/library/nodisk:latest")   # its disk file does not exist
    # Networking is not available yet: a clear 500 dependency_missing that says what to do.
    r = call(stack, auth, "POST", "/instances", json={"name": "failing", "image": "nodisk"})
    assert err(r) == (500, "dependency_missing")
    assert "network" in r.json()["message"]
    # No network: the VMM (or the missing guest kernel) fails; everything is rolled back.
    r = call(stack, auth, "POST", "/instances", json={"name": "failing", "image": "nodisk", "network": {"enabled": False}})
    assert r.status_code == 500 and r.json()["code"] in ("internal_error", "dependency_missing"), r.text
    assert all(i["name"] != "failing" for i in call(stack, auth, "GET", "/instances").json())
    assert not any((stack.data_dir / "guests").iterdir())


def test_images_api(stack, auth):
    assert err(call(stack, auth, "POST", "/images", json={"name": "has spaces"})) == (400, "invalid_name")
    assert err(call(stack, auth, "POST", "/images", json={"name": ""})) == (400, "invalid_name")
    assert err(call(stack, auth, "POST", "/images", json={})) == (400, "Bad Request")
    name, digest = seed_ready_image(stack, "docker.io/library/listed:v1")
    imgs = call(stack, auth, "GET", "/images").json()
    assert any(i["name"] == name and i["digest"] == digest and i["status"] == "ready" for i in imgs)
    enc = requests.utils.quote(name, safe="")
    got = call(stack, auth, "GET", f"/images/{enc}").json()
    assert got["size_bytes"] == 4096 and got["env"] == {"A": "1"} and got["entrypoint"] == ["/bin/sh"]
    assert call(stack, auth, "GET", "/images/listed:v1").json()["digest"] == digest
    assert call(stack, auth, "GET", "/images/" + requests.utils.quote(f"docker.io/library/listed@{digest}", safe="")).status_code == 200
    assert err(call(stack, auth, "GET", "/images/listed:v2")) == (404, "not_found")
    assert err(call(stack, auth, "GET", "/images/" + requests.utils.quote("Bad Name", safe=""))) == (400, "invalid_name")
    assert call(stack, auth, "DELETE", f"/images/{enc}").status_code == 204
    assert err(call(stack, auth, "GET", f"/images/{enc}")) == (404, "not_found")


def test_volumes_crud(stack, auth):
    r = call(stack, auth, "POST", "/volumes", json={"name": "data-1", "size_gb": 1})
    assert r.status_code == 201, r.text
    vol = r.json()
    path = stack.data_dir / "volumes" / vol["id"] / "data.raw"
    assert path.stat().st_size == 1 << 30 and path.stat().st_blocks * 512 < 64 << 20, "sparse 1 GiB file"
    with open(path, "rb") as f:
        f.seek(1024 + 56)
        assert f.read(2) == b"\x53\xef", "ext4 superblock magic"
    assert call(stack, auth, "GET", "/volumes/data-1").json()["id"] == vol["id"]
    assert vol in call(stack, auth, "GET", "/volumes").json()
    assert err(call(stack, auth, "POST", "/volumes", json={"name": "dup", "size_gb": 1, "id": vol["id"]})) == (409, "already_exists")
    assert err(call(stack, auth, "POST", "/volumes", json={"name": "bad", "size_gb": 1, "id": "../etc"})) == (400, "invalid_field")
    assert err(call(stack, auth, "POST", "/volumes", json={"name": "z", "size_gb": 0})) == (400, "invalid_field")
    assert err(call(stack, auth, "POST", "/volumes", json={"name": "z", "size_gb": "1"})) == (400, "Bad Request")
    assert call(stack, auth, "DELETE", f"/volumes/{vol['id']}").status_code == 204
    assert not path.exists()
    assert err(call(stack, auth, "GET", f"/volumes/{vol['id']}")) == (404, "not_found")


def test_volume_in_use_cannot_be_deleted(stack, auth):
    vol = call(stack, auth, "POST", "/volumes", json={"name": "busy", "size_gb": 1}).json()
    db = sqlite3.connect(stack.db_path, timeout=10)
    with db:
        db.execute("INSERT INTO instances(id, name, image, image_digest, state, size, hotplug_size, overlay_size, vcpus,"
                   " network_enabled, creating, created_at) VALUES('zzstopped000000000000000','holder','x','d','Stopped',1,0,1,1,0,0,'2026-01-01T00:00:00Z')")
        db.execute("INSERT INTO instance_volumes(instance_id, volume_id, position, mount_path, readonly) VALUES(?,?,0,'/data',0)",
                   ("zzstopped000000000000000", vol["id"]))
    db.close()
    assert err(call(stack, auth, "DELETE", f"/volumes/{vol['id']}")) == (409, "conflict")
    got = call(stack, auth, "GET", f"/volumes/{vol['id']}").json()
    assert got["attachments"] == [{"instance_id": "zzstopped000000000000000", "mount_path": "/data", "readonly": False}]
    # Detach on a stopped instance is a recorded change; then the volume can go.
    inst = call(stack, auth, "DELETE", f"/instances/holder/volumes/{vol['id']}").json()
    assert "volumes" not in inst
    assert call(stack, auth, "POST", f"/instances/holder/volumes/{vol['id']}", json={"mount_path": "/mnt/v"}).json()["volumes"][0]["mount_path"] == "/mnt/v"
    assert err(call(stack, auth, "POST", f"/instances/holder/volumes/{vol['id']}", json={"mount_path": "/mnt/w"})) == (409, "conflict")
    assert err(call(stack, auth, "POST", f"/instances/holder/volumes/{vol['id']}", json={})) == (400, "Bad Request")
    # Operations gated by state (409 with the contract's message).
    r = call(stack, auth, "POST", "/instances/holder/stop")
    assert err(r) == (409, "invalid_state")
    assert r.json()["message"] == "invalid state transition: cannot stop from state Stopped, must be Running"
    assert err(call(stack, auth, "POST", "/instances/holder/restore")) == (409, "invalid_state")
    # Delete works from Stopped without a hypervisor.
    assert call(stack, auth, "DELETE", "/instances/holder").status_code == 204
    assert call(stack, auth, "DELETE", f"/volumes/{vol['id']}").status_code == 204


def test_volume_multipart_errors(stack, auth):
    r = call(stack, auth, "POST", "/volumes", files={"name": (None, "x")})
    assert err(r) == (400, "missing_file")
    r = call(stack, auth, "POST", "/volumes", data=b"--zz\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert err(r) == (400, "invalid_form")
    r = call(stack, auth, "POST", "/volumes", files={"name": (None, "x"), "size_gb": (None, "-3"), "content": ("a.tgz", b"xx")})
    assert err(r) == (400, "invalid_field")
    assert not any((stack.data_dir / "uploads").glob("*")), "rejected uploads leave no staged file"


def test_instance_resolution_and_ambiguity(stack, auth):
    db = sqlite3.connect(stack.db_path, timeout=10)
    with db:
        for iid in ("qqambig1x000000000000000", "qqambig2x000000000000000"):
            db.execute("INSERT INTO instances(id, name, image, image_digest, state, size, hotplug_size, overlay_size, vcpus,"
                       " network_enabled, creating, created_at) VALUES(?,'twin','x','d','Stopped',1073741824,0,1,2,0,0,'2026-01-01T00:00:00Z')", (iid,))
    db.close()
    assert err(call(stack, auth, "GET", "/instances/twin")) == (409, "ambiguous")
    assert err(call(stack, auth, "GET", "/instances/qqambig")) == (409, "ambiguous")
    one = call(stack, auth, "GET", "/instances/qqambig1x000000000000000").json()
    assert one["state"] == "Stopped" and one["size"] == "1024.0 MB" and one["network"] == {"enabled": False, "ip": None, "mac": None}
    assert call(stack, auth, "GET", "/instances/qqambig2x").json()["id"] == "qqambig2x000000000000000"
    for iid in ("qqambig1x000000000000000", "qqambig2x000000000000000"):
        assert call(stack, auth, "DELETE", f"/instances/{iid}").status_code == 204
    assert err(call(stack, auth, "GET", "/instances/twin")) == (404, "not_found")


def test_logs_errors_and_stream(stack, auth):
    db = sqlite3.connect(stack.db_path, timeout=10)
    iid = "qqlogs000000000000000001"
    with db:
        db.execute("INSERT INTO instances(id, name, image, image_digest, state, size, hotplug_size, overlay_size, vcpus,"
                   " network_enabled, creating, created_at) VALUES(?,'logger','x','d','Stopped',1,0,1,2,0,0,'2026-01-01T00:00:00Z')", (iid,))
    db.close()
    assert err(call(stack, auth, "GET", f"/instances/{iid}/logs")) == (404, "log_not_found")
    assert err(call(stack, auth, "GET", f"/instances/{iid}/logs?tail=x")) == (400, "Bad Request")
    logdir = stack.data_dir / "guests" / iid / "logs"
    logdir.mkdir(parents=True)
    (logdir / "app.log").write_text("".join(f"line {i} \"q\"\n" for i in range(150)))
    r = requests.get(f"{stack.url}/instances/{iid}/logs", headers=auth)
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = [json.loads(l[6:]) for l in r.text.split("\n") if l.startswith("data: ")]
    assert events == [f"line {i} \"q\"" for i in range(50, 150)]
    # follow: appended lines arrive promptly through nginx (unbuffered SSE), and beyond 60 s later tests.
    with requests.get(f"{stack.url}/instances/{iid}/logs?tail=1&follow=true", headers=auth, stream=True, timeout=10) as s:
        lines = s.iter_lines()
        assert next(l for l in lines if l) == b'data: "line 149 \\"q\\""'
        t0 = time.time()
        with open(logdir / "app.log", "a") as f:
            f.write("appended marker\n")
        assert next(l for l in lines if l) == b'data: "appended marker"'
        assert time.time() - t0 < 3
    call(stack, auth, "DELETE", f"/instances/{iid}")


def test_ingresses_crud(stack, auth):
    body = {"name": "web", "rules": [{"match": {"hostname": "{inst}.apps.example.com"}, "target": {"instance": "{inst}", "port": 8080}}]}
    r = call(stack, auth, "POST", "/ingresses", json=body)
    assert r.status_code == 201
    ing = r.json()
    assert ing["rules"][0] == {"match": {"hostname": "{inst}.apps.example.com", "port": 80},
                               "target": {"instance": "{inst}", "port": 8080}, "tls": False, "redirect_http": False}
    assert err(call(stack, auth, "POST", "/ingresses", json=body)) == (409, "already_exists")
    assert err(call(stack, auth, "POST", "/ingresses", json={**body, "name": "web2"})) == (409, "hostname_in_use")
    assert err(call(stack, auth, "POST", "/ingresses", json={"name": "x", "rules": [{"match": {"hostname": "lit.example.com"},
                "target": {"instance": "ghost", "port": 80}}]})) == (404, "instance_not_found")
    assert call(stack, auth, "GET", "/ingresses/web").json()["id"] == ing["id"]
    assert ing in call(stack, auth, "GET", "/ingresses").json()
    assert call(stack, auth, "DELETE", f"/ingresses/{ing['id']}").status_code == 204
    assert err(call(stack, auth, "GET", f"/ingresses/{ing['id']}")) == (404, "not_found")


def test_concurrent_requests_from_many_connections(stack, auth):
    def one(i):
        s = requests.Session()
        codes = []
        for _ in range(20):
            codes.append(s.get(stack.url + "/instances", headers=auth).status_code)
            codes.append(s.post(stack.url + "/instances", json={"name": "x", "image": "bad name"}, headers=auth).status_code)
        return codes
    with cf.ThreadPoolExecutor(32) as ex:
        results = [c for cs in ex.map(one, range(64)) for c in cs]
    assert results.count(200) == 64 * 20 and results.count(400) == 64 * 20


def test_32_concurrent_creates_with_one_name_exactly_one_wins(stack, auth):
    seed_ready_image(stack, "docker.io/library/race:latest")
    # Hold the queue so every request is admitted (or refused) before the winner's job runs.
    prov = stack.procs["provisioner"]
    prov.send_signal(signal.SIGSTOP)
    ex = cf.ThreadPoolExecutor(32)
    try:
        def create(_):
            return requests.post(stack.url + "/instances", json={"name": "racer", "image": "race"}, headers=auth, timeout=120)
        futs = [ex.submit(create, i) for i in range(32)]
        time.sleep(3)
        refused = [f.result() for f in futs if f.done()]
        assert len(refused) == 31, [r.text for r in refused]
        assert all(err(r) == (409, "name_conflict") for r in refused)
    finally:
        prov.send_signal(signal.SIGCONT)
        ex.shutdown(wait=True)
    winner = [r for r in (f.result() for f in futs) if r.status_code != 409]
    assert len(winner) == 1
    assert winner[0].status_code in (201, 500)
    if winner[0].status_code == 201:
        call(stack, auth, "DELETE", f"/instances/{winner[0].json()['id']}")


def test_job_outlives_its_requester(stack, auth):
    """A request that gives up still gets its work done; the result is visible afterwards."""
    prov = stack.procs["provisioner"]
    prov.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.post(stack.url + "/volumes", json={"name": "late", "size_gb": 1}, headers=auth, timeout=1)
    finally:
        prov.send_signal(signal.SIGCONT)
    deadline = time.time() + 20
    while time.time() < deadline:
        vols = [v for v in call(stack, auth, "GET", "/volumes").json() if v["name"] == "late"]
        if vols:
            break
        time.sleep(0.1)
    assert vols, "the volume was created although the client left"
    call(stack, auth, "DELETE", f"/volumes/{vols[0]['id']}")


def test_workers_exit_cleanly_on_sigterm(stack):
    # A fresh worker on its own socket: SIGTERM stops it within a second, removing its socket.
    sock = stack.run_dir / "fcgi-extra.sock"
    env = stack.env()
    env["HYPEMAN_FCGI_SOCKET"] = str(sock)
    import subprocess
    p = subprocess.Popen([str(stack.bin / "hypeman-fcgi")], env=env, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.01)
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    assert p.wait(5) == 0
    assert time.time() - t0 < 2
    assert not sock.exists()
