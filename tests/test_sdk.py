"""The official Python SDK (hypeman==0.1.0, max_retries=0, strict response validation) against
the real stack, for everything that needs no VM."""
import sqlite3
import time

import hypeman
import pytest

from test_api import seed_ready_image


def insert_stopped_instance(stack, iid, name):
    db = sqlite3.connect(stack.db_path, timeout=10)
    with db:
        db.execute("INSERT INTO instances(id, name, image, image_digest, state, size, hotplug_size, overlay_size, vcpus, env,"
                   " network_enabled, creating, created_at, stopped_at) VALUES(?,?,'alpine','d','Stopped',536870912,3221225472,"
                   "10737418240,2,'{\"K\":\"v\"}',0,0,'2026-01-01T00:00:00Z','2026-01-01T00:01:00Z')", (iid, name))
    db.close()


def test_health(client):
    assert client.health.check().status == "ok"


def test_auth_failure_raises_authentication_error(stack):
    c = hypeman.Hypeman(base_url=stack.url, api_key="not.a.jwt", max_retries=0, _strict_response_validation=True)
    with pytest.raises(hypeman.AuthenticationError) as e:
        c.instances.list()
    assert e.value.status_code == 401
    assert e.value.body["code"] == "Unauthorized"


def test_images(stack, client):
    name, digest = seed_ready_image(stack, "docker.io/library/sdkimg:1")
    listed = client.images.list()
    assert any(i.name == name and i.status == "ready" for i in listed)
    img = client.images.get(name)
    assert img.digest == digest and img.size_bytes == 4096 and img.entrypoint == ["/bin/sh"] and img.env == {"A": "1"}
    with pytest.raises(hypeman.BadRequestError) as e:
        client.images.create(name="not a ref")
    assert e.value.body["code"] == "invalid_name"
    with pytest.raises(hypeman.NotFoundError):
        client.images.get("docker.io/library/sdkimg:2")
    client.images.delete(name)
    with pytest.raises(hypeman.NotFoundError):
        client.images.get(name)


def test_instances_read_side_and_errors(stack, client):
    insert_stopped_instance(stack, "sdkinst00000000000000001", "sdk-one")
    inst = client.instances.get("sdk-one")
    assert inst.id == "sdkinst00000000000000001"
    assert inst.state == "Stopped" and inst.size == "512.0 MB" and inst.hotplug_size == "3.0 GB" and inst.overlay_size == "10.0 GB"
    assert inst.env == {"K": "v"} and inst.network.enabled is False and inst.network.ip is None
    assert inst.has_snapshot is False and inst.stopped_at is not None
    assert any(i.id == inst.id for i in client.instances.list())
    with pytest.raises(hypeman.ConflictError) as e:
        client.instances.stop(inst.id)
    assert e.value.body == {"code": "invalid_state", "message": "invalid state transition: cannot stop from state Stopped, must be Running"}
    with pytest.raises(hypeman.ConflictError):
        client.instances.standby(inst.id)
    with pytest.raises(hypeman.ConflictError):
        client.instances.restore(inst.id)
    with pytest.raises(hypeman.NotFoundError):
        client.instances.get("no-such-instance")
    with pytest.raises(hypeman.BadRequestError) as e:
        client.instances.create(name="sdk-two", image="alpine", size="1.5GB")
    assert e.value.body["code"] == "invalid_size"
    with pytest.raises(hypeman.NotFoundError):
        client.instances.create(name="sdk-two", image="docker.io/library/never:pulled")
    client.instances.delete(inst.id)
    with pytest.raises(hypeman.NotFoundError):
        client.instances.get(inst.id)


def test_instance_logs_stream(stack, client):
    insert_stopped_instance(stack, "sdklogs00000000000000001", "sdk-logs")
    logdir = stack.data_dir / "guests" / "sdklogs00000000000000001" / "logs"
    logdir.mkdir(parents=True)
    (logdir / "app.log").write_text("hello from the guest\nsecond \u00e9 line\n")
    (logdir / "hypeman.log").write_text("2026-01-01T00:00:00Z INFO create requested\n")
    assert list(client.instances.logs("sdk-logs", tail=10)) == ["hello from the guest", "second \u00e9 line"]
    assert list(client.instances.logs("sdk-logs", source="hypeman")) == ["2026-01-01T00:00:00Z INFO create requested"]
    with pytest.raises(hypeman.NotFoundError) as e:
        list(client.instances.logs("sdk-logs", source="vmm"))
    assert e.value.body["code"] == "log_not_found"
    stream = client.instances.logs("sdk-logs", tail=0, follow=True)
    it = iter(stream)
    time.sleep(0.3)
    with open(logdir / "app.log", "a") as f:
        f.write("live line\n")
    assert next(it) == "live line"
    stream.close()
    client.instances.delete("sdk-logs")


def test_volumes(stack, client):
    vol = client.volumes.create(name="sdk-vol", size_gb=2)
    assert vol.size_gb == 2 and vol.name == "sdk-vol" and not vol.attachments
    assert client.volumes.get("sdk-vol").id == vol.id
    assert any(v.id == vol.id for v in client.volumes.list())
    with pytest.raises(hypeman.ConflictError):
        client.volumes.create(name="again", size_gb=1, id=vol.id)
    insert_stopped_instance(stack, "sdkvol000000000000000001", "sdk-holder")
    inst = client.instances.volumes.attach(vol.id, id="sdk-holder", mount_path="/data", readonly=True)
    assert inst.volumes[0].volume_id == vol.id and inst.volumes[0].readonly is True
    assert client.volumes.get(vol.id).attachments[0].instance_id == "sdkvol000000000000000001"
    with pytest.raises(hypeman.ConflictError):
        client.volumes.delete(vol.id)
    inst = client.instances.volumes.detach(vol.id, id="sdk-holder")
    assert not inst.volumes
    client.volumes.delete(vol.id)
    with pytest.raises(hypeman.NotFoundError):
        client.volumes.get(vol.id)
    client.instances.delete("sdk-holder")


def test_ingresses(client):
    ing = client.ingresses.create(name="sdk-web", rules=[{"match": {"hostname": "{i}.sdk.example.com"},
                                                           "target": {"instance": "{i}", "port": 8080}}])
    assert ing.rules[0].match.port == 80 and ing.rules[0].tls is False
    assert client.ingresses.get("sdk-web").id == ing.id
    assert any(i.id == ing.id for i in client.ingresses.list())
    with pytest.raises(hypeman.ConflictError):
        client.ingresses.create(name="sdk-web", rules=[{"match": {"hostname": "x.sdk.example.com"},
                                                        "target": {"instance": "x", "port": 80}}])
    with pytest.raises(hypeman.BadRequestError):
        client.ingresses.create(name="bad-one", rules=[{"match": {"hostname": "api-{x}.example.com"},
                                                        "target": {"instance": "{x}", "port": 80}}])
    client.ingresses.delete(ing.id)
    with pytest.raises(hypeman.NotFoundError):
        client.ingresses.get(ing.id)
