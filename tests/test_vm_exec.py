"""The guest agent in real guests: exec over the WebSocket through nginx (with the official SDK's
exec helper and a raw WebSocket client), readiness (Initializing until the agent answers), and
live volume attach/detach on a running instance (hot-plug + mount by the agent, busy refusal)."""
import concurrent.futures as cf
import json
import threading
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from test_vm_lifecycle import _skip_reason, api, create, wait_line, assert_gone, image  # noqa: F401

pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture(scope="module")
def idle(stack, auth, image):  # noqa: F811
    inst = create(stack, auth, image, "exec-idle", env={"MODE": "idle", "SECRET": "from-instance-env"})
    yield inst
    api(stack, auth, "DELETE", f"/instances/{inst['id']}")


def ws_url(stack, iid):
    return stack.url.replace("http://", "ws://") + f"/instances/{iid}/exec"


def run(client, iid, argv, **kw):
    from hypeman.lib.exec import exec as hexec
    return hexec(client, iid, argv, **kw)


def test_create_answers_running_once_the_agent_answered(stack, auth, idle):
    # create() asserted Running; the app log shows the agent's start and the hypeman log its readiness.
    wait_line(stack, auth, idle["id"], r"guest agent started")
    hlog = api(stack, auth, "GET", f"/instances/{idle['id']}/logs?source=hypeman").text
    assert "guest agent ready after" in hlog


def test_exec_output_exit_codes_env_and_cwd(stack, client, idle):
    r = run(client, idle["id"], ["echo", "hello", "world"])
    assert (r.output, r.exit_code) == (b"hello world\n", 0)
    r = run(client, idle["id"], ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert r.exit_code == 3 and b"out\n" in r.output and b"err\n" in r.output
    # The app's environment (image env + instance env) is the base; the request's env overrides;
    # the image's working directory is the default cwd.
    r = run(client, idle["id"], ["sh", "-c", "echo $GREETING $SECRET $EXTRA; pwd"], env={"EXTRA": "x y"})
    assert r.output == b"hello from-instance-env x y\n/srv\n", r.output
    r = run(client, idle["id"], ["pwd"], cwd="/tmp")
    assert r.output == b"/tmp\n"
    # Inside the app's root, as root.
    r = run(client, idle["id"], ["sh", "-c", "whoami; cat /etc/hostname 2>/dev/null; ls /app.sh"])
    assert r.output.startswith(b"root\n") and b"/app.sh" in r.output


def test_exec_missing_command_timeout_tty_and_stdin(stack, client, idle):
    r = run(client, idle["id"], ["/no/such/binary"])
    assert r.exit_code == 127 and r.output.startswith(b"Error: "), r
    r = run(client, idle["id"], ["no-such-command-anywhere"])
    assert r.exit_code == 127 and b"not found" in r.output, r
    t0 = time.time()
    r = run(client, idle["id"], ["sleep", "30"], timeout=1)
    assert r.exit_code == 124 and time.time() - t0 < 15
    r = run(client, idle["id"], ["tty"], tty=True)
    assert r.exit_code == 0 and r.output.startswith(b"/dev/pts/"), r
    r = run(client, idle["id"], ["stty", "size"], tty=True, rows=33, cols=101)
    assert b"33 101" in r.output, r
    r = run(client, idle["id"], ["head", "-c", "11"], stdin=b"hello stdin and more")
    assert r.output == b"hello stdin", r


def test_exec_sessions_run_concurrently(stack, client, idle):
    t0 = time.time()
    with cf.ThreadPoolExecutor(5) as ex:
        results = list(ex.map(lambda i: run(client, idle["id"], ["sh", "-c", f"sleep 2; echo {i}"]), range(5)))
    assert [r.output for r in results] == [f"{i}\n".encode() for i in range(5)]
    assert time.time() - t0 < 9, "5 × sleep 2 ran one after another"


def test_exec_large_output_arrives_whole(stack, client, idle):
    r = run(client, idle["id"], ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a"], timeout=120)
    assert r.exit_code == 0 and len(r.output) == 3_000_000 and set(r.output) == {ord("a")}


def test_exec_errors_before_the_upgrade(stack, auth, token, image):  # noqa: F811
    def status(iid, headers):
        with pytest.raises(InvalidStatus) as e:
            ws_connect(ws_url(stack, iid), additional_headers=headers, open_timeout=30)
        return e.value.response.status_code, json.loads(e.value.response.body or b"{}")

    code, body = status("no-such-instance", {"Authorization": f"Bearer {token}"})
    assert code == 404 and body["code"] == "not_found"
    code, body = status("whatever", {})
    assert code == 401 and body["code"] == "Unauthorized"
    stopped = create(stack, auth, image, "exec-stopped", env={"MODE": "idle"})
    assert api(stack, auth, "POST", f"/instances/{stopped['id']}/stop").json()["state"] == "Stopped"
    code, body = status(stopped["id"], {"Authorization": f"Bearer {token}"})
    assert code == 409 and body["code"] == "invalid_state" and "Stopped" in body["message"]
    assert api(stack, auth, "DELETE", f"/instances/{stopped['id']}").status_code == 204


def test_exec_by_name_and_bad_first_message(stack, token, idle):
    with ws_connect(ws_url(stack, idle["name"]), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send(json.dumps({"command": ["echo", "by-name"]}))
        assert ws.recv(timeout=60) == b"by-name\n"
        assert json.loads(ws.recv(timeout=60)) == {"exitCode": 0}
    with ws_connect(ws_url(stack, idle["id"]), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send(json.dumps({"command": "not-a-list"}))
        assert "error" in json.loads(ws.recv(timeout=30))


def test_client_disconnect_kills_the_session(stack, client, token, idle):
    with ws_connect(ws_url(stack, idle["id"]), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send(json.dumps({"command": ["sh", "-c", "echo $$; exec sleep 1000"]}))
        pid = int(ws.recv(timeout=60).decode().strip())
    deadline = time.time() + 20
    while time.time() < deadline:
        r = run(client, idle["id"], ["sh", "-c", f"[ -d /proc/{pid} ] && echo alive || echo gone"])
        if r.output == b"gone\n":
            return
        time.sleep(0.5)
    raise AssertionError(f"exec'd process {pid} still alive after its client went away")


def test_live_attach_write_detach_and_read_elsewhere(stack, auth, client, token, image, idle):  # noqa: F811
    vol = api(stack, auth, "POST", "/volumes", json={"name": "live-vol", "size_gb": 1}).json()
    vid = vol["id"]
    r = api(stack, auth, "POST", f"/instances/{idle['id']}/volumes/{vid}", json={"mount_path": "/mnt/live"})
    assert r.status_code == 200, r.text
    assert {"volume_id": vid, "mount_path": "/mnt/live", "readonly": False}.items() <= r.json()["volumes"][0].items()
    r = run(client, idle["id"], ["sh", "-c", "echo written-live > /mnt/live/f && sync && cat /mnt/live/f && grep -c /mnt/live /proc/mounts"])
    assert r.output == b"written-live\n1\n", r.output
    # A second attachment read-write elsewhere is refused while this one holds it.
    other = create(stack, auth, image, "exec-other", env={"MODE": "idle"})
    r = api(stack, auth, "POST", f"/instances/{other['id']}/volumes/{vid}", json={"mount_path": "/data"})
    assert (r.status_code, r.json()["code"]) == (409, "conflict")

    # Busy: a process working inside the mount keeps detach from happening; nothing changes.
    ws = ws_connect(ws_url(stack, idle["id"]), additional_headers={"Authorization": f"Bearer {token}"})
    ws.send(json.dumps({"command": ["sh", "-c", "echo in; exec sleep 1000"], "cwd": "/mnt/live"}))
    assert ws.recv(timeout=60) == b"in\n"
    r = api(stack, auth, "DELETE", f"/instances/{idle['id']}/volumes/{vid}")
    assert (r.status_code, r.json()["code"]) == (409, "conflict") and "busy" in r.json()["message"]
    assert run(client, idle["id"], ["cat", "/mnt/live/f"]).output == b"written-live\n"
    assert api(stack, auth, "GET", f"/volumes/{vid}").json()["attachments"][0]["instance_id"] == idle["id"]
    ws.close()
    deadline = time.time() + 30
    while True:
        r = api(stack, auth, "DELETE", f"/instances/{idle['id']}/volumes/{vid}")
        if r.status_code == 200 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200, r.text
    assert not r.json().get("volumes")
    assert run(client, idle["id"], ["sh", "-c", "grep -c /mnt/live /proc/mounts; ls /mnt/live"]).output == b"0\n"
    assert "attachments" not in api(stack, auth, "GET", f"/volumes/{vid}").json()

    # Attached read-only to another running instance: the data is there; writes are refused.
    r = api(stack, auth, "POST", f"/instances/{other['id']}/volumes/{vid}", json={"mount_path": "/data", "readonly": True})
    assert r.status_code == 200, r.text
    assert run(client, other["id"], ["cat", "/data/f"]).output == b"written-live\n"
    r = run(client, other["id"], ["sh", "-c", "echo x > /data/g"])
    assert r.exit_code != 0 and b"Read-only" in r.output, r
    # It survives a stop/start as a boot-time volume, and detaches while Stopped too.
    assert api(stack, auth, "POST", f"/instances/{other['id']}/stop").json()["state"] == "Stopped"
    assert api(stack, auth, "POST", f"/instances/{other['id']}/start").json()["state"] == "Running"
    assert run(client, other["id"], ["cat", "/data/f"]).output == b"written-live\n"
    # Live detach of a volume the init mounted at boot.
    r = api(stack, auth, "DELETE", f"/instances/{other['id']}/volumes/{vid}")
    assert r.status_code == 200, r.text
    assert run(client, other["id"], ["sh", "-c", "grep -c ' /data ' /proc/mounts"]).output == b"0\n"
    assert api(stack, auth, "DELETE", f"/instances/{other['id']}").status_code == 204
    assert_gone(stack, auth, other["id"])
    assert api(stack, auth, "DELETE", f"/volumes/{vid}").status_code == 204


def test_the_app_writes_to_a_volume_attached_live(stack, auth, client, image):  # noqa: F811
    vol = api(stack, auth, "POST", "/volumes", json={"name": "app-live", "size_gb": 1}).json()
    app = create(stack, auth, image, "exec-app-live", env={"MODE": "livewrite", "VOLFILE": "/data/app.txt", "DATA": "from the app"})
    wait_line(stack, auth, app["id"], r"^waiting for a volume at /data$")
    r = api(stack, auth, "POST", f"/instances/{app['id']}/volumes/{vol['id']}", json={"mount_path": "/data"})
    assert r.status_code == 200, r.text
    wait_line(stack, auth, app["id"], r"^wrote /data/app.txt$")
    r = api(stack, auth, "DELETE", f"/instances/{app['id']}/volumes/{vol['id']}")
    assert r.status_code == 200, r.text
    reader = create(stack, auth, image, "exec-app-reader", env={"MODE": "read", "VOLFILE": "/data/app.txt"},
                    volumes=[{"volume_id": vol["id"], "mount_path": "/data", "readonly": True}])
    wait_line(stack, auth, reader["id"], r"^read: from the app$")
    for inst in (app, reader):
        assert api(stack, auth, "DELETE", f"/instances/{inst['id']}").status_code == 204
    assert api(stack, auth, "DELETE", f"/volumes/{vol['id']}").status_code == 204


def test_skip_guest_agent(stack, auth, token, image):  # noqa: F811
    inst = create(stack, auth, image, "exec-no-agent", env={"MODE": "idle"}, skip_guest_agent=True)
    wait_line(stack, auth, inst["id"], r"guest agent disabled")
    with pytest.raises(InvalidStatus) as e:
        ws_connect(ws_url(stack, inst["id"]), additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=30)
    assert e.value.response.status_code == 409 and b"skip_guest_agent" in e.value.response.body
    vol = api(stack, auth, "POST", "/volumes", json={"name": "no-agent-vol", "size_gb": 1}).json()
    r = api(stack, auth, "POST", f"/instances/{inst['id']}/volumes/{vol['id']}", json={"mount_path": "/data"})
    assert (r.status_code, r.json()["code"]) == (409, "invalid_state")
    assert "attachments" not in api(stack, auth, "GET", f"/volumes/{vol['id']}").json()
    assert api(stack, auth, "DELETE", f"/instances/{inst['id']}").status_code == 204
    assert api(stack, auth, "DELETE", f"/volumes/{vol['id']}").status_code == 204


def test_agent_comes_back_after_restore_and_a_provisioner_restart(stack, auth, client, idle):
    import signal
    # A process started by exec in the background keeps running across standby/restore.
    r = run(client, idle["id"], ["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"])
    pid = int(r.output)
    assert api(stack, auth, "POST", f"/instances/{idle['id']}/standby").json()["state"] == "Standby"
    got = api(stack, auth, "POST", f"/instances/{idle['id']}/restore").json()
    assert got["state"] == "Running", got   # restore answers once the agent answered again
    assert run(client, idle["id"], ["sh", "-c", f"[ -d /proc/{pid} ] && echo alive"]).output == b"alive\n"
    # The Provisioner dies: the VM lives on; the restarted one adopts it and reconnects the agent.
    stack.restart_provisioner(signal.SIGKILL)
    deadline = time.time() + 60
    while time.time() < deadline:
        if api(stack, auth, "GET", f"/instances/{idle['id']}").json()["state"] == "Running":
            break
        time.sleep(0.3)
    assert api(stack, auth, "GET", f"/instances/{idle['id']}").json()["state"] == "Running"
    r = run(client, idle["id"], ["echo", "still here"], wait_for_agent=30)
    assert (r.output, r.exit_code) == (b"still here\n", 0)
