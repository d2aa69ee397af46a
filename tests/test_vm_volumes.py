"""Volumes inside real guests: a writer's data survives its deletion and is read by two readers at
once, one read-only and one with a private overlay (whose writes stay private); data also
survives stop/start and standby/restore."""
import time

import pytest
import requests

from test_vm_lifecycle import _skip_reason, api, create, wait_line, app_lines, assert_gone, image  # noqa: F401

pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def test_writer_then_two_readers(stack, auth, image):  # noqa: F811
    vol = api(stack, auth, "POST", "/volumes", json={"name": "shared-data", "size_gb": 1}).json()
    vid = vol["id"]
    w = create(stack, auth, image, "vol-writer", env={"MODE": "write", "VOLFILE": "/data/note.txt", "DATA": "written by the writer"},
               volumes=[{"volume_id": vid, "mount_path": "/data"}])
    wait_line(stack, auth, w["id"], r"^wrote /data/note.txt$")
    # Data survives stop/start of the writer, and standby/restore.
    assert api(stack, auth, "POST", f"/instances/{w['id']}/stop").json()["state"] == "Stopped"
    assert api(stack, auth, "POST", f"/instances/{w['id']}/start").json()["state"] == "Running"
    wait_line(stack, auth, w["id"], r"^wrote /data/note.txt$", after=1)
    # A second writer is refused while the first holds the volume read-write.
    r = api(stack, auth, "POST", "/instances", json={"name": "vol-w2", "image": image, "network": {"enabled": False},
                                                      "volumes": [{"volume_id": vid, "mount_path": "/data"}]})
    assert (r.status_code, r.json()["code"]) == (409, "conflict")
    assert api(stack, auth, "DELETE", f"/instances/{w['id']}").status_code == 204
    assert_gone(stack, auth, w["id"])
    assert "attachments" not in api(stack, auth, "GET", f"/volumes/{vid}").json()

    ro = create(stack, auth, image, "vol-ro", env={"MODE": "read", "VOLFILE": "/data/note.txt"},
                volumes=[{"volume_id": vid, "mount_path": "/data", "readonly": True}])
    ov = create(stack, auth, image, "vol-ov", env={"MODE": "read", "VOLFILE": "/data/note.txt"},
                volumes=[{"volume_id": vid, "mount_path": "/data", "readonly": True, "overlay": True, "overlay_size": "64MB"}])
    for inst in (ro, ov):
        wait_line(stack, auth, inst["id"], r"^read: written by the writer$")
    wait_line(stack, auth, ro["id"], r"^write refused$")
    wait_line(stack, auth, ov["id"], r"^write ok: private$")
    got = api(stack, auth, "GET", f"/volumes/{vid}").json()
    assert sorted(a["instance_id"] for a in got["attachments"]) == sorted([ro["id"], ov["id"]])
    assert all(a["readonly"] for a in got["attachments"])
    # The overlay reader's write is private: after standby/restore of the ro reader it still is not there.
    assert api(stack, auth, "POST", f"/instances/{ro['id']}/standby").json()["state"] == "Standby"
    assert api(stack, auth, "POST", f"/instances/{ro['id']}/restore").json()["state"] == "Running"
    assert api(stack, auth, "DELETE", f"/volumes/{vid}").status_code == 409
    for inst in (ro, ov):
        assert api(stack, auth, "DELETE", f"/instances/{inst['id']}").status_code == 204
        assert_gone(stack, auth, inst["id"])
    # A fresh read-only reader sees the writer's file but not the overlay's private one.
    chk = create(stack, auth, image, "vol-check", env={"MODE": "read", "VOLFILE": "/data/note.txt.mine"},
                 volumes=[{"volume_id": vid, "mount_path": "/data", "readonly": True}])
    hits, _ = wait_line(stack, auth, chk["id"], r"^read: ")
    assert "No such file" in hits[0], hits
    assert api(stack, auth, "DELETE", f"/instances/{chk['id']}").status_code == 204
    assert api(stack, auth, "DELETE", f"/volumes/{vid}").status_code == 204
