"""Guest networking, entirely inside network namespaces this test creates: one plays the host
side (bridge, TAPs, NAT), one the uplink (a veth pair with documentation-range addresses and an
HTTP server). Nothing is created in, or sent to, the machine's own network."""
import os
import re
import secrets
import shutil
import subprocess
import time

import pytest
import requests

from stack import Stack, KERNEL_DIR
from test_vm_lifecycle import _skip_reason, wait_line, app_lines, vmm_pids

UPLINK_ADDR = "192.0.2.2"   # TEST-NET-1, exists only inside the uplink namespace
HOST_ADDR = "192.0.2.1"


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def _net_skip():
    if os.geteuid() != 0:
        return "network tests need root (ip netns)"
    if not shutil.which("ip") or sh("ip", "netns", "list", check=False).returncode != 0:
        return "ip netns is not available (apt-get install iproute2)"
    if not shutil.which("iptables"):
        return "iptables is not installed (apt-get install iptables)"
    return _skip_reason()


pytestmark = pytest.mark.skipif(_net_skip() is not None, reason=_net_skip() or "")


@pytest.fixture(scope="module")
def net():
    sfx = secrets.token_hex(3)
    host, up = f"hm-host-{sfx}", f"hm-up-{sfx}"
    vh, vu = f"hmvh{sfx}", f"hmvu{sfx}"
    server = None
    st = None
    try:
        sh("ip", "netns", "add", host)
        sh("ip", "netns", "add", up)
        sh("ip", "netns", "exec", host, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", up, "ip", "link", "set", "lo", "up")
        sh("ip", "-n", host, "link", "add", vh, "type", "veth", "peer", "name", vu, "netns", up)
        sh("ip", "-n", host, "addr", "add", f"{HOST_ADDR}/24", "dev", vh)
        sh("ip", "-n", up, "addr", "add", f"{UPLINK_ADDR}/24", "dev", vu)
        sh("ip", "-n", host, "link", "set", vh, "up")
        sh("ip", "-n", up, "link", "set", vu, "up")
        www = f"/tmp/hm-www-{sfx}"
        os.makedirs(www, exist_ok=True)
        with open(f"{www}/index.html", "w") as f:
            f.write("uplink-ok")
        server = subprocess.Popen(["ip", "netns", "exec", up, "python3", "-m", "http.server", "8080", "--bind", UPLINK_ADDR,
                                   "--directory", www], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        st = Stack(env={"HYPEMAN_NETWORK": "on", "NETWORK_NETNS": host, "UPLINK_INTERFACE": vh,
                        "SUBNET_CIDR": "10.123.0.0/16", "DNS_SERVER": UPLINK_ADDR}).start()
        st.push_test_images()
        st.host_ns, st.up_ns, st.www = host, up, www
        yield st
    finally:
        if st:
            st.stop()
        if server:
            server.kill()
            server.wait()
        sh("ip", "netns", "del", host, check=False)
        sh("ip", "netns", "del", up, check=False)
        shutil.rmtree(f"/tmp/hm-www-{sfx}", ignore_errors=True)


@pytest.fixture(scope="module")
def nauth(net):
    return {"Authorization": f"Bearer {net.token()}"}


@pytest.fixture(scope="module")
def nimage(net, nauth):
    name = net.image("test/busybox:latest")
    requests.post(net.url + "/images", json={"name": name}, headers=nauth, timeout=60).raise_for_status()
    deadline = time.time() + 120
    while time.time() < deadline:
        if requests.get(net.url + "/images/" + requests.utils.quote(name, safe=""), headers=nauth).json()["status"] == "ready":
            return name
        time.sleep(0.2)
    raise AssertionError("image not ready")


def create(net, auth, image, name, env):
    r = requests.post(net.url + "/instances", headers=auth, timeout=180, json={
        "name": name, "image": image, "size": "256MB", "hotplug_size": "256MB", "overlay_size": "1GB", "vcpus": 1, "env": env})
    assert r.status_code == 201, r.text
    inst = r.json()
    assert inst["network"]["enabled"] is True and inst["network"]["name"] == "default"
    assert re.fullmatch(r"10\.123\.\d+\.\d+", inst["network"]["ip"]) and inst["network"]["mac"].startswith("02:00:00:")
    return inst


def in_host(net, *cmd):
    return sh("ip", "netns", "exec", net.host_ns, *cmd, check=False)


def tap_of(iid):
    return "hype-" + iid[:8]


def host_get(net, ip, timeout=int(os.environ.get("HM_NET_WAIT", "90"))):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = in_host(net, "curl", "-s", "-m", "3", f"http://{ip}/")
        if r.returncode == 0:
            return r.stdout
        time.sleep(0.5)
    return None


def test_guest_serves_http_and_reaches_the_uplink_through_nat(net, nauth, nimage):
    web = create(net, nauth, nimage, "web", {"MODE": "httpd"})
    assert host_get(net, web["network"]["ip"]) == "served by web\n"
    client = create(net, nauth, nimage, "client", {"MODE": "fetch", "FETCH_HOST": UPLINK_ADDR, "FETCH_PORT": "8080"})
    wait_line(net, nauth, client["id"], r"^fetched: uplink-ok$")
    # Guests cannot reach each other (isolated bridge ports).
    peer = create(net, nauth, nimage, "peer", {"MODE": "fetch", "FETCH_HOST": web["network"]["ip"]})
    wait_line(net, nauth, peer["id"], r"^fetch failed$")
    time.sleep(3)
    assert not any(l.startswith("fetched:") for l in app_lines(net, nauth, peer["id"]))
    # NAT rules are ours and recognisable.
    rules = in_host(net, "iptables-save").stdout
    assert "hypeman-nat" in rules and "hypeman-fwd-out" in rules
    for i in (web, client, peer):
        assert requests.delete(net.url + f"/instances/{i['id']}", headers=nauth).status_code == 204
        assert in_host(net, "ip", "link", "show", tap_of(i["id"])).returncode != 0, "TAP removed on delete"


def test_tap_follows_the_lifecycle(net, nauth, nimage):
    inst = create(net, nauth, nimage, "cycle", {"MODE": "httpd"})
    iid, ip, mac = inst["id"], inst["network"]["ip"], inst["network"]["mac"]
    link = in_host(net, "ip", "-d", "link", "show", tap_of(iid)).stdout
    assert "master vmbr0" in link and "isolated on" in link
    assert host_get(net, ip)
    r = requests.post(net.url + f"/instances/{iid}/standby", headers=nauth, timeout=180).json()
    assert r["state"] == "Standby" and r["network"]["ip"] == ip
    assert in_host(net, "ip", "link", "show", tap_of(iid)).returncode != 0, "no TAP while in standby"
    r = requests.post(net.url + f"/instances/{iid}/restore", headers=nauth, timeout=180).json()
    assert r["state"] == "Running" and r["network"]["ip"] == ip and r["network"]["mac"] == mac
    assert in_host(net, "ip", "link", "show", tap_of(iid)).returncode == 0
    assert host_get(net, ip, timeout=30) == "served by cycle\n", "the same server answers after restore"
    r = requests.post(net.url + f"/instances/{iid}/stop", headers=nauth, timeout=180).json()
    assert r["state"] == "Stopped"
    assert in_host(net, "ip", "link", "show", tap_of(iid)).returncode != 0, "no TAP while stopped"
    r = requests.post(net.url + f"/instances/{iid}/start", headers=nauth, timeout=180).json()
    assert r["state"] == "Running" and r["network"]["ip"]
    assert host_get(net, r["network"]["ip"]) == "served by cycle\n", "fresh network on start"
    assert requests.delete(net.url + f"/instances/{iid}", headers=nauth).status_code == 204
    assert in_host(net, "ip", "link", "show", tap_of(iid)).returncode != 0
    assert vmm_pids(net, iid) == []
    assert not [l for l in in_host(net, "ip", "-o", "link").stdout.splitlines() if "hype-" in l]


def test_networked_names_are_unique(net, nauth, nimage):
    a = create(net, nauth, nimage, "dup", {"MODE": "idle"})
    r = requests.post(net.url + "/instances", headers=nauth, timeout=60, json={"name": "dup", "image": nimage})
    assert (r.status_code, r.json()["code"]) == (409, "name_conflict")
    assert requests.delete(net.url + f"/instances/{a['id']}", headers=nauth).status_code == 204
