"""Fidelity tests for the Cloud Hypervisor stand-in (standin.py): raw HTTP on its Unix socket.

Each rule tested here is one the notes (cloud-hypervisor-notes.md §1–2) state for CH v48, or one
read from its source (vmm/src/api/http, micro_http). Run: python3 -m pytest tests/ch_standin -q
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin.py"
MIB = 1 << 20


class VMM:
    def __init__(self, tmp, env=None, args=None):
        self.dir = tmp
        self.sock = os.path.join(tmp, "ch.sock")
        self.log = os.path.join(tmp, "requests.jsonl")
        full_env = dict(os.environ, CH_STANDIN_LOG=self.log, **(env or {}))
        self.proc = subprocess.Popen([sys.executable, str(STANDIN), "--api-socket", self.sock, *(args or [])],
                                     env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"stand-in exited: {self.proc.stderr.read().decode()}")
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.sock)
                s.close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("stand-in did not listen")

    def raw(self, data, responses=1, conn=None):
        """Sends raw bytes on a new (or given) connection; returns [(status, headers, body)]."""
        s = conn or socket.socket(socket.AF_UNIX)
        if conn is None:
            s.connect(self.sock)
        s.settimeout(5)
        s.sendall(data)
        out, buf = [], b""
        while len(out) < responses:
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
            n = int(headers.get("content-length", "0"))
            while len(buf) < n:
                buf += s.recv(65536)
            body, buf = buf[:n], buf[n:]
            out.append((status, headers, body.decode(), lines[0]))
        if conn is None:
            s.close()
        return out

    def call(self, method, endpoint, body=None):
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        head = f"{method} /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        status, headers, text, _ = self.raw(head.encode() + b"\r\n" + data)[0]
        return status, (json.loads(text) if text else None), headers

    def requests(self):
        with open(self.log) as f:
            return [json.loads(line) for line in f]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture()
def tmp():
    with tempfile.TemporaryDirectory(prefix="chs.", dir="/tmp") as d:
        for name in ("vmlinux", "initrd", "root.img", "vol.img"):
            with open(os.path.join(d, name), "wb") as f:
                f.write(b"\0" * 4096)
        yield d


@pytest.fixture()
def vmm(tmp):
    v = VMM(tmp)
    yield v
    v.stop()


def config(tmp, hotplug=1 << 30):
    return {"payload": {"kernel": f"{tmp}/vmlinux", "initramfs": f"{tmp}/initrd", "cmdline": "console=ttyS0"},
            "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
            "memory": {"size": 512 * MIB, "hotplug_size": hotplug, "hotplug_method": "VirtioMem"},
            "disks": [{"path": f"{tmp}/root.img", "readonly": True, "id": "rootfs"}],
            "serial": {"mode": "File", "file": f"{tmp}/app.log"}, "console": {"mode": "Off"},
            "vsock": {"cid": 3, "socket": f"{tmp}/vsock.sock"}}


def booted(vmm, tmp):
    assert vmm.call("PUT", "vm.create", config(tmp))[0] == 204
    assert vmm.call("PUT", "vm.boot")[0] == 204


# -- HTTP layer -------------------------------------------------------------------------------------

def test_response_shape_like_micro_http(vmm):
    status, headers, body, line = vmm.raw(b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n")[0]
    assert line == "HTTP/1.1 200 " and status == 200          # no reason phrase
    assert headers["server"] == "Cloud Hypervisor API" and headers["content-type"] == "application/json"
    ping = json.loads(body)
    assert ping["version"] == "48.0.0" and ping["pid"] == vmm.proc.pid
    status, headers, body, _ = vmm.raw(b"PUT /api/v1/vm.delete HTTP/1.1\r\n\r\n")[0]
    assert status == 204 and "content-length" not in headers and body == ""


def test_bodyless_action_with_a_body_is_400(vmm, tmp):
    assert vmm.call("PUT", "vm.create", config(tmp))[0] == 204
    status, body, _ = vmm.call("PUT", "vm.boot", {})
    assert (status, body) == (400, ["Bad Request"])
    assert vmm.call("PUT", "vm.info")[0] == 400                 # wrong method
    assert vmm.call("GET", "vm.info")[1]["state"] == "Created"  # the boot did not happen
    # Content-Length: 0 is the same as no body.
    assert vmm.raw(b"PUT /api/v1/vm.boot HTTP/1.1\r\nContent-Length: 0\r\n\r\n")[0][0] == 204
    log = vmm.requests()
    assert any("takes no body" in v for r in log for v in r["violations"])


def test_body_calls_need_a_valid_body(vmm, tmp):
    assert vmm.call("PUT", "vm.create")[0:2] == (400, None)       # bare 400, empty body
    assert vmm.call("PUT", "vm.resize")[0:2] == (400, ["Bad Request"])
    status, body, _ = vmm.call("PUT", "vm.create", b"{not json")
    assert status == 400 and body[0] == "Failed to deserialize JSON"
    bad = config(tmp)
    bad["memory"]["size"] = "512M"                               # sizes are integers in bytes
    status, body, _ = vmm.call("PUT", "vm.create", bad)
    assert status == 400 and "memory/size" in body[1]
    bad = config(tmp)
    bad["serial"]["mode"] = "file"                               # enum values are case-sensitive
    assert vmm.call("PUT", "vm.create", bad)[0] == 400
    bad = config(tmp)
    bad["vsock"]["cid"] = 2
    assert vmm.call("PUT", "vm.create", bad)[0] == 400           # schema minimum: 3
    bad = config(tmp)
    bad["memory"]["hotplug_method"] = "virtio-mem"
    assert vmm.call("PUT", "vm.create", bad)[0] == 400           # serde enum
    assert vmm.call("GET", "vm.info")[0] == 500                  # nothing was created


def test_chunked_body_is_read_as_empty_then_misparsed(vmm, tmp):
    data = json.dumps(config(tmp)).encode()
    req = (b"PUT /api/v1/vm.create HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
           + f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
    status, _, body, _ = vmm.raw(req)[0]
    assert status == 400 and "All previous unanswered requests will be dropped." in body
    assert vmm.call("GET", "vm.info")[0] == 500
    assert vmm.raw(b"PUT /api/v1/vm.boot HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")[0][0] == 400


def test_expect_continue_gets_an_interim_100(vmm, tmp):
    data = json.dumps(config(tmp)).encode()
    req = (b"PUT /api/v1/vm.create HTTP/1.1\r\nExpect: 100-continue\r\n"
           + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    answers = vmm.raw(req, responses=2)
    assert [a[0] for a in answers] == [100, 204]
    assert vmm.requests()[-1]["expect"] is True


def test_body_limit_is_51200_bytes(vmm):
    req = b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 51201\r\n\r\n"
    status, _, body, _ = vmm.raw(req)[0]
    assert status == 400 and "51200" in body


def test_routes(vmm):
    assert vmm.call("GET", "vm.nope")[0:2] == (404, ["Not Found"])
    assert vmm.call("PUT", "vmm.nmi")[0] == 404                  # the v48 YAML's mistake
    assert vmm.call("PUT", "vm.coredump", {"destination_url": "file:///tmp/x"})[0] == 404
    assert vmm.call("PUT", "vm.nmi")[1][-1] == "VM is not running"
    assert vmm.call("GET", "vm.boot")[0:2] == (400, ["Bad Request"])
    assert vmm.raw(b"POST /api/v1/vm.boot HTTP/1.1\r\n\r\n")[0][0] == 400
    assert vmm.raw(b"PATCH /api/v1/vm.boot HTTP/1.1\r\n\r\n")[0][0:3:2] == (400, "")


def test_keep_alive_serves_several_requests_on_one_connection(vmm):
    s = socket.socket(socket.AF_UNIX)
    s.connect(vmm.sock)
    two = b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\nGET /api/v1/vm.info HTTP/1.1\r\n\r\n"
    assert [a[0] for a in vmm.raw(two, responses=2, conn=s)] == [200, 500]
    s.close()
    log = vmm.requests()
    assert [r["request_on_connection"] for r in log] == [1, 2]


# -- VMM state machine ------------------------------------------------------------------------------

def test_create_boot_shutdown_boot_delete_create(vmm, tmp):
    booted(vmm, tmp)
    assert vmm.call("PUT", "vm.create", config(tmp))[1] == ["Error from API", "The VM could not be created",
                                                            "VM is already created"]
    status, body, _ = vmm.call("PUT", "vm.boot")
    assert status == 500 and body[-1] == "invalid VM state transition: Running to Running"
    info = vmm.call("GET", "vm.info")[1]
    assert info["state"] == "Running" and info["device_tree"]["_virtio-pci-rootfs"]["pci_bdf"].startswith("0000:00:")
    assert os.path.exists(f"{tmp}/vsock.sock")
    assert vmm.call("PUT", "vm.shutdown")[0] == 204
    info = vmm.call("GET", "vm.info")[1]
    assert info["state"] == "Created" and info["device_tree"] is None   # "Created" also means shut down
    assert not os.path.exists(f"{tmp}/vsock.sock")
    assert vmm.call("PUT", "vm.shutdown")[1][-1] == "VM is not running"
    assert vmm.call("PUT", "vm.boot")[0] == 204                           # boots again after vm.shutdown
    assert vmm.call("GET", "vm.info")[1]["state"] == "Running"
    assert vmm.call("PUT", "vm.delete")[0] == 204
    assert vmm.call("GET", "vm.info")[0] == 500
    assert vmm.call("PUT", "vm.delete")[0] == 204                         # nothing to delete: still 204
    assert vmm.call("PUT", "vm.create", config(tmp))[0] == 204


def test_boot_errors_surface_at_boot(vmm, tmp):
    cfg = config(tmp)
    cfg["payload"]["kernel"] = f"{tmp}/missing"
    assert vmm.call("PUT", "vm.create", cfg)[0] == 204                   # create only stores
    status, body, _ = vmm.call("PUT", "vm.boot")
    assert status == 500 and body[:3] == ["Error from API", "The VM could not boot", "Cannot open kernel file"]


def test_pause_resume_transitions(vmm, tmp):
    assert vmm.call("PUT", "vm.pause")[1][-1] == "VM is not running"
    booted(vmm, tmp)
    assert vmm.call("PUT", "vm.pause")[0] == 204
    status, body, _ = vmm.call("PUT", "vm.pause")
    assert status == 500 and body[1] == "The VM could not be paused"
    assert vmm.call("PUT", "vm.resume")[0] == 204
    assert vmm.call("PUT", "vm.resume")[0] == 500
    assert vmm.call("PUT", "vm.pause")[0] == 204
    assert vmm.call("PUT", "vm.boot")[0] == 204                           # boot on a paused VM resumes it
    assert vmm.call("GET", "vm.info")[1]["state"] == "Running"


def test_snapshot_and_restore(tmp):
    first = VMM(tmp)
    try:
        booted(first, tmp)
        snap = os.path.join(tmp, "snap")
        url = {"destination_url": f"file://{snap}"}
        status, body, _ = first.call("PUT", "vm.snapshot", url)
        assert status == 500 and body[-1] == "Trying to snapshot while VM is running"
        assert first.call("PUT", "vm.pause")[0] == 204
        assert first.call("PUT", "vm.snapshot", url)[1][-1].startswith("Destination is not a directory")
        os.mkdir(snap)
        assert first.call("PUT", "vm.snapshot", url)[0] == 204
        assert sorted(os.listdir(snap)) == ["config.json", "memory-ranges", "state.json"]
        assert first.call("PUT", "vm.snapshot", url)[1][-1] == "File exists (os error 17)"
        assert first.call("PUT", "vm.restore", {"source_url": f"file://{snap}"})[1][-1] == "VM is already created"
        status, _, headers = first.call("PUT", "vmm.shutdown")
        assert status == 200 and headers["content-length"] == "0"
        assert first.proc.wait(5) == 0
        assert not os.path.exists(first.sock) and not os.path.exists(f"{tmp}/vsock.sock")
    finally:
        first.stop()
    second = VMM(tmp)
    try:
        assert second.call("PUT", "vm.restore", {"source_url": f"file://{snap}", "prefault": False})[0] == 204
        info = second.call("GET", "vm.info")[1]
        assert info["state"] == "Paused" and info["memory_actual_size"] == 512 * MIB
        assert second.call("PUT", "vm.resume")[0] == 204
        with open(f"{tmp}/app.log") as f:
            assert "resumed from snapshot" in f.read()
    finally:
        second.stop()


def test_virtio_mem_resize_rules(vmm, tmp):
    booted(vmm, tmp)
    identical = vmm.call("PUT", "vm.resize", {"desired_ram": 512 * MIB})
    assert identical[0] == 500 and "identical" in identical[1][-1]
    assert vmm.call("PUT", "vm.resize", {"desired_ram": 1024 * MIB})[0] == 204
    info = vmm.call("GET", "vm.info")[1]
    assert info["memory_actual_size"] == 1024 * MIB and info["config"]["memory"]["hotplugged_size"] == 512 * MIB
    assert "bigger than region_size" in vmm.call("PUT", "vm.resize", {"desired_ram": 4096 * MIB})[1][-1]
    assert "not aligned" in vmm.call("PUT", "vm.resize", {"desired_ram": 1024 * MIB + 4096})[1][-1]


def test_hotplug_and_cold_plug(vmm, tmp):
    assert vmm.call("PUT", "vm.create", config(tmp))[0] == 204
    assert vmm.call("PUT", "vm.add-disk", {"path": f"{tmp}/vol.img", "id": "cold"})[0] == 204
    assert vmm.call("PUT", "vm.boot")[0] == 204
    status, body, _ = vmm.call("PUT", "vm.add-disk", {"path": f"{tmp}/vol.img", "id": "hot"})
    assert status == 200 and body["id"] == "hot" and body["bdf"].startswith("0000:00:")
    assert vmm.call("PUT", "vm.add-disk", {"path": f"{tmp}/vol.img", "id": "hot"})[0] == 500
    ids = [d["id"] for d in vmm.call("GET", "vm.info")[1]["config"]["disks"]]
    assert ids == ["rootfs", "cold", "hot"]
    assert vmm.call("PUT", "vm.remove-device", {"id": "hot"})[0] == 204
    assert vmm.call("PUT", "vm.remove-device", {"id": "hot"})[1][-1] == \
        "Failed to find device corresponding to the given identifier"
    status, body, _ = vmm.call("PUT", "vm.add-disk", {"path": f"{tmp}/vol.img"})
    assert status == 200 and body["id"].startswith("_disk")


def test_power_button_powers_the_guest_off_and_ends_the_vmm(vmm, tmp):
    booted(vmm, tmp)
    assert vmm.call("PUT", "vm.power-button")[0] == 204
    assert vmm.proc.wait(5) == 0
    assert not os.path.exists(vmm.sock) and not os.path.exists(f"{tmp}/vsock.sock")


def test_signals(tmp):
    v = VMM(tmp)
    booted(v, tmp)
    v.proc.send_signal(signal.SIGTERM)
    assert v.proc.wait(5) == 0
    assert not os.path.exists(v.sock) and not os.path.exists(f"{tmp}/vsock.sock")
    v = VMM(tmp)
    booted(v, tmp)
    v.proc.kill()
    v.proc.wait(5)
    assert os.path.exists(v.sock) and os.path.exists(f"{tmp}/vsock.sock")   # SIGKILL leaves both
    third = subprocess.run([sys.executable, str(STANDIN), "--api-socket", v.sock], capture_output=True, timeout=10)
    assert third.returncode == 1 and b"Address already in use" in third.stderr


def test_cli(tmp):
    out = subprocess.run([sys.executable, str(STANDIN), "--version"], capture_output=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith(b"cloud-hypervisor v48.0")
    out = subprocess.run([sys.executable, str(STANDIN), "--api-socket", f"{tmp}/x.sock", "--kernel", "k"],
                         capture_output=True, timeout=10)
    assert out.returncode == 2
    v = VMM(tmp, args=["-v", "--event-monitor", f"path={tmp}/events"])
    try:
        booted(v, tmp)
    finally:
        v.stop()
    with open(f"{tmp}/events") as f:
        text = f.read()
    assert '"event": "booted"' in text and '"source": "vm"' in text
