"""Supervision of the run mode (tests/stack.py) and stored-pid safety, through real nginx.

- kill -9 of a FastCGI worker under wrk load: a new worker answers on its socket within 2 s, and
  nginx's errors over the run stay bounded (it retries the other upstream: fastcgi_next_upstream
  defaults to `error timeout`).
- kill -9 of the Provisioner: restarted, jobs run again. Deliberate stops are not undone.
- A stored VMM pid that now belongs to an unrelated process (a `sleep` here) is never signalled
  by reconcile or delete, and the instance ends Stopped / deleted.
"""
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import time

import pytest
import requests

from stack import Stack
from fcgi_client import fcgi_get


@pytest.fixture(scope="module")
def sst():
    st = Stack(workers=2, threads=16, registry=False).start()
    yield st
    codes = st.stop()
    bad = {k: v for k, v in codes.items() if v not in (0, None, -15)}
    assert not bad, f"processes did not exit cleanly on SIGTERM: {bad}"


@pytest.fixture(scope="module")
def sauth(sst):
    return {"Authorization": f"Bearer {sst.token('tester')}"}


def wait_worker_back(st, name: str, old_pid: int, timeout: float) -> tuple[float, int]:
    """Polls until `name` runs under a new pid and answers GET /health on its own socket."""
    t0 = time.time()
    sock = st.run_dir / f"{name}.sock"
    while time.time() - t0 < timeout:
        p = st.procs.get(name)
        if p is not None and p.pid != old_pid and p.poll() is None and sock.exists():
            try:
                if b'"ok"' in fcgi_get(sock, "/health", timeout=0.5):
                    return time.time() - t0, p.pid
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"{name} was not back within {timeout} s; supervisor.log: "
                         f"{(st.dir / 'supervisor.log').read_text() if (st.dir / 'supervisor.log').exists() else '-'}")


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return False


def parse_wrk(out: str) -> dict:
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    sock_errors = sum(int(x) for x in sock.groups()) if sock else 0
    return {"total": total, "non2xx": non2xx, "socket_errors": sock_errors}


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (apt-get install wrk)")
def test_worker_killed_under_wrk_load_is_back_within_2s_and_errors_are_bounded(sst, sauth, tmp_path):
    script = tmp_path / "auth.lua"
    script.write_text(f'wrk.headers["Authorization"] = "{sauth["Authorization"]}"\n')
    log_before = (sst.dir / "nginx" / "error.log").read_text() if (sst.dir / "nginx" / "error.log").exists() else ""
    wrk = subprocess.Popen(["wrk", "-t2", "-c16", "-d6s", "-s", str(script), sst.url + "/instances"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.5)
    victim = sst.procs["fcgi-0"]
    old_pid = victim.pid
    os.kill(old_pid, signal.SIGKILL)
    took, new_pid = wait_worker_back(sst, "fcgi-0", old_pid, timeout=2.0)
    out, _ = wrk.communicate(timeout=60)
    stats = parse_wrk(out)
    errors = stats["non2xx"] + stats["socket_errors"]
    nginx_log = (sst.dir / "nginx" / "error.log").read_text()[len(log_before):]
    upstream_errors = len(re.findall(r"\[error\].*upstream", nginx_log))
    print(f"\n[supervision] worker back after {took * 1000:.0f} ms; wrk: {stats['total']} requests, "
          f"{stats['non2xx']} non-2xx, {stats['socket_errors']} socket errors; nginx upstream errors logged: {upstream_errors}")
    assert took < 2.0
    assert stats["total"] > 100, out
    # In-flight requests on the killed worker may fail (a POST is not retried); GETs are retried
    # on the other worker. Bounded: at most the 16 connections' in-flight requests.
    assert errors <= 16, out
    assert not zombie(old_pid), "the dead worker was reaped"
    assert any(r["name"] == "fcgi-0" and r["old_pid"] == old_pid and r["new_pid"] == new_pid for r in sst.restarts)
    assert "fcgi-0 (pid %d) exited unexpectedly (killed by SIGKILL)" % old_pid in (sst.dir / "supervisor.log").read_text()
    # Both workers serve again through nginx.
    for _ in range(20):
        assert requests.get(sst.url + "/instances", headers=sauth, timeout=5).status_code == 200


def test_provisioner_killed_is_restarted_and_works(sst, sauth):
    old = sst.procs["provisioner"]
    os.kill(old.pid, signal.SIGKILL)
    deadline = time.time() + 20
    while time.time() < deadline:
        p = sst.procs["provisioner"]
        if p is not old and p.poll() is None and (sst.run_dir / "provisioner.wake").exists():
            break
        time.sleep(0.05)
    assert sst.procs["provisioner"] is not old, "the provisioner was not restarted"
    assert not zombie(old.pid)
    # It takes jobs again: a volume create is a job the Provisioner runs.
    r = requests.post(sst.url + "/volumes", json={"name": "after-restart", "size_gb": 1}, headers=sauth, timeout=60)
    assert r.status_code == 201, r.text
    assert requests.delete(sst.url + f"/volumes/{r.json()['id']}", headers=sauth, timeout=60).status_code == 204


def test_deliberate_stops_are_not_undone(sst):
    # A worker stopped on purpose stays stopped; starting it again brings supervision back.
    code = sst.stop_process("fcgi-1", signal.SIGKILL)
    assert code == -signal.SIGKILL
    time.sleep(1.0)
    assert sst.procs["fcgi-1"].poll() is not None, "a deliberate stop was undone"
    sst.start_worker(1)
    assert sst.procs["fcgi-1"].poll() is None
    # restart_provisioner kills and starts exactly one new provisioner (no second one from the supervisor).
    n = len(sst.restarts)
    sst.restart_provisioner(signal.SIGKILL)
    time.sleep(1.0)
    assert len(sst.restarts) == n
    out = subprocess.run(["pgrep", "-f", str(sst.bin / "hypeman-provisioner")], capture_output=True, text=True).stdout.split()
    mine = [pid for pid in out if os.path.exists(f"/proc/{pid}/environ")
            and str(sst.data_dir).encode() in open(f"/proc/{pid}/environ", "rb").read()]
    assert mine == [str(sst.procs["provisioner"].pid)], (mine, sst.procs["provisioner"].pid)


def test_a_process_that_keeps_dying_is_restarted_with_backoff():
    from stack import Supervisor
    sup = Supervisor.__new__(Supervisor)
    sup.history = {}
    now = 1000.0
    delays = []
    for i in range(6):
        delays.append(sup.delay("fcgi-0", now + i * 0.1))
        sup.history["fcgi-0"].append(now + i * 0.1)
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert sup.delay("fcgi-0", now + 100) == 0.0, "reset after 30 s up"
    assert Supervisor.failed(-signal.SIGKILL) and Supervisor.failed(1) and Supervisor.failed(-signal.SIGSEGV)
    assert not Supervisor.failed(0) and not Supervisor.failed(-signal.SIGTERM)


def _seed_instance(st, iid: str, pid: int, state: str = "Running") -> None:
    db = sqlite3.connect(st.db_path, timeout=10)
    with db:
        db.execute("INSERT INTO instances(id, name, image, image_digest, state, size, hotplug_size, overlay_size, vcpus,"
                   " env, network_enabled, hypervisor, vmm_pid, creating, created_at)"
                   " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (iid, "n" + iid[:10], "img", "sha256:x", state, 256 << 20, 0, 1 << 30, 1, "{}", 0, "qemu", pid, 0,
                    "2026-01-01T00:00:00.000000Z"))
    db.close()
    (st.data_dir / "guests" / iid / "logs").mkdir(parents=True, exist_ok=True)


def _iid() -> str:
    return "p" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(23))


def test_a_stored_pid_of_an_unrelated_process_is_never_killed(sst, sauth):
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        # Reconcile at start: the stored pid is alive but not our VMM -> Stopped, not signalled.
        sst.stop_process("provisioner")
        rec = _iid()
        _seed_instance(sst, rec, sleeper.pid)
        sst.start_provisioner()
        deadline = time.time() + 20
        got = None
        while time.time() < deadline:
            got = requests.get(sst.url + f"/instances/{rec}", headers=sauth, timeout=10).json()
            if got.get("state") == "Stopped":
                break
            time.sleep(0.1)
        assert got["state"] == "Stopped", got
        assert sleeper.poll() is None, "reconcile killed an unrelated process"
        hlog = (sst.data_dir / "guests" / rec / "logs" / "hypeman.log").read_text()
        assert "is not this instance's VMM" in hlog and "not signalled" in hlog
        # Delete with the stranger's pid stored: the instance goes, the stranger stays.
        dele = _iid()
        _seed_instance(sst, dele, sleeper.pid)
        assert requests.delete(sst.url + f"/instances/{dele}", headers=sauth, timeout=60).status_code == 204
        assert requests.get(sst.url + f"/instances/{dele}", headers=sauth, timeout=10).status_code == 404
        assert not (sst.data_dir / "guests" / dele).exists()
        assert sleeper.poll() is None, "delete killed an unrelated process"
        # Stop with the stranger's pid stored: Stopped, stranger alive. (The watch loop may mark it
        # Stopped first; the stop then answers 409 — either way nothing is signalled.)
        stp = _iid()
        _seed_instance(sst, stp, sleeper.pid)
        r = requests.post(sst.url + f"/instances/{stp}/stop", headers=sauth, timeout=60)
        assert r.status_code in (200, 409), r.text
        assert requests.get(sst.url + f"/instances/{stp}", headers=sauth, timeout=10).json()["state"] == "Stopped"
        assert sleeper.poll() is None, "stop killed an unrelated process"
        assert requests.delete(sst.url + f"/instances/{stp}", headers=sauth, timeout=60).status_code == 204
        # The watch loop also marks such an instance Stopped without signalling.
        w = _iid()
        _seed_instance(sst, w, sleeper.pid)
        deadline = time.time() + 20
        while time.time() < deadline:
            if requests.get(sst.url + f"/instances/{w}", headers=sauth, timeout=10).json()["state"] == "Stopped":
                break
            time.sleep(0.1)
        assert requests.get(sst.url + f"/instances/{w}", headers=sauth, timeout=10).json()["state"] == "Stopped"
        assert sleeper.poll() is None
        for iid in (rec, w):
            assert requests.delete(sst.url + f"/instances/{iid}", headers=sauth, timeout=60).status_code == 204
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
