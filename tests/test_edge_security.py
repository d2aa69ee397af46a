"""The edge under attack (issue 18), through the real nginx config in front of the real app.

- One canonical path: a path that nginx reads as an open location (`/health`, `/openapi.yaml`)
  but the app would read as a resource route (`/volumes/..%2Fhealth`) is refused — 401 by nginx
  or 400 by the app — for every method and every spelling, and nothing changes.
- The app and the exec gateway refuse requests that did not come through nginx's bearer check
  (no X-Auth-Subject), spoken to their sockets directly.
- The sockets are 0660 root:hypeman in a 0750 run dir: a user outside the group cannot connect.
- Tokens without `exp`, or living longer than HYPEMAN_MAX_TOKEN_TTL, are refused.
- render.sh refuses bench mode (the API without auth) on a non-loopback listener.
- nginx's own 405s carry `Allow`.

Raw requests go through http.client so that no client library normalises the path first.
"""
import http.client
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from fcgi_client import base_params, fcgi_request
from stack import REPO, SOCKET_GROUP, Stack, ensure_socket_group, mint_token
from test_auth import bearer, claims, jwt, own_edge, assert_unauthorized, INVALID

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
OPEN = ["health", "openapi.yaml"]
# Route prefixes whose next segment is a parameter the attacker chooses.
PREFIXES = ["/volumes/", "/instances/", "/images/", "/ingresses/", "/instances/edge-nope/volumes/",
            "/instances/edge-nope/", "/images/docker.io%2F"]
# Spellings of "../" (and "./") that nginx resolves before choosing its location.
ESCAPES = ["..%2F", "..%2f", "%2e%2e%2f", "%2E%2E%2F", "%2e%2E/", ".%2e/", "%2E./", "./../", "..%2F.%2F",
           "x/..%2F..%2F", "x%2F..%2F..%2F", "%2e%2e/%2e%2e/"]


def raw(url: str, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    host, port = url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def volumes(stack) -> list:
    r = requests.get(stack.url + "/volumes", headers=bearer(stack.token()), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


# ---- one canonical path ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bait(stack):
    """Volumes named as the encoded paths would reach them in the app ("../health", ...), when the
    API accepts such names; the tests check they survive."""
    made = []
    for name in ("../health", "../openapi.yaml"):
        r = requests.post(stack.url + "/volumes", json={"name": name, "size_gb": 1}, headers=bearer(stack.token()), timeout=120)
        if r.status_code in (200, 201, 202):
            made.append(r.json()["id"])
    yield made


def attack_paths():
    for target in OPEN:
        for prefix in PREFIXES:
            for esc in ESCAPES:
                yield prefix + esc + target
        # NUL, double slashes, a trailing dot segment
        yield f"/volumes/x%00/..%2F{target}"
        yield f"/volumes//..%2F{target}"
        yield f"//volumes/..%2F%2F{target}"
        yield f"/volumes/..%2F{target}%00"
        yield f"/{target}/%2e"
        yield f"/{target}/."
        # Characters some servers treat as path ends or separators: '#', ';', '\\'.
        yield f"/{target}#/../volumes/edge-nope"
        yield f"/volumes/x#/../../{target}"
        yield f"/volumes/..;/{target}"
        yield f"/volumes/x\\..\\..\\{target}"
        yield f"/volumes/%2e%2e%5c{target}"


@pytest.mark.parametrize("method", METHODS)
def test_encoded_paths_never_reach_a_route_without_a_token(stack, bait, method):
    before = volumes(stack)
    seen = {}
    for path in attack_paths():
        body = b"{}" if method in ("POST", "PUT", "PATCH") else None
        status, headers, data = raw(stack.url, method, path, body=body)
        seen[path] = status
        assert status in (400, 401), (method, path, status, data[:200])
        if method != "HEAD":
            doc = json.loads(data)
            assert doc["code"] in ("bad_request", "Unauthorized"), (method, path, doc)
    # Nothing changed: every volume (the bait among them) is still there, no new one appeared.
    after = volumes(stack)
    assert sorted(v["id"] for v in after) == sorted(v["id"] for v in before)
    for vid in bait:
        assert any(v["id"] == vid for v in after)
    # The app itself refused some of them (the ones nginx sent to an open location).
    assert 400 in seen.values()


def test_over_tls_and_in_absolute_form_too(stack, bait):
    """The TLS server shares the locations; absolute-form request lines ("DELETE http://h/p") are
    read the same way."""
    import ssl
    ctx = ssl._create_unverified_context()
    for path in attack_paths():
        conn = http.client.HTTPSConnection("127.0.0.1", stack.https_port, timeout=30, context=ctx)
        try:
            conn.request("DELETE", path)
            r = conn.getresponse()
            assert r.status in (400, 401), (path, r.status)
            r.read()
        finally:
            conn.close()
    for target in OPEN:
        for line in (f"DELETE http://x/volumes/..%2F{target} HTTP/1.1", f"DELETE http://x/volumes/%2e%2e/{target} HTTP/1.1"):
            with socket.create_connection(("127.0.0.1", stack.http_port), timeout=30) as s:
                s.sendall(f"{line}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            status = int(data.split(b" ", 2)[1])
            assert status in (400, 401), (line, data[:300])
    for vid in bait:
        assert any(v["id"] == vid for v in volumes(stack))


def test_the_same_paths_are_refused_with_a_token_too(stack, bait):
    """With a valid token nginx sends them all to the app, which refuses the ones it would read
    differently from nginx (400), so the bait is not hit through the token-protected path either."""
    tok = bearer(stack.token())
    seen = 0
    for path in attack_paths():
        status, _, data = raw(stack.url, "DELETE", path, headers=tok)
        # 400, or 404 where both read the path alike as no route or no such volume ("..;", "x\\..")
        assert status in (400, 404), (path, status, data[:200])
        assert json.loads(data)["code"] in ("bad_request", "not_found")
        seen = seen + 1 if status == 400 else seen
    assert seen > 100
    for vid in bait:
        assert any(v["id"] == vid for v in volumes(stack))


def test_regex_locations_reached_by_another_spelling_are_refused_behind_them(stack):
    """The exec and logs locations are regexes on nginx's decoded path; a path that reaches them
    only after decoding is refused by the gateway or the app (besides needing a token)."""
    tok = bearer(stack.token())
    status, _, data = raw(stack.url, "GET", "/volumes/..%2Finstances%2Fedge-nope%2Flogs", headers=tok)
    assert status == 400 and json.loads(data)["code"] == "bad_request", data
    ws = {**tok, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for path in ("/instances/edge-nope%2F..%2Fedge-nope/exec", "/instances/%2e%2e/instances/edge-nope/exec"):
        status, _, data = raw(stack.url, "GET", path, headers=ws)
        assert status in (400, 404), (path, status, data)
    # Without a token nginx refuses all of them first.
    status, _, _ = raw(stack.url, "GET", "/instances/edge-nope%2F..%2Fedge-nope/exec")
    assert status == 401


def test_legal_paths_still_work(stack):
    tok = bearer(stack.token())
    # An encoded slash inside a segment stays legal (image names), and merged slashes are fine.
    status, _, data = raw(stack.url, "GET", "/images/docker.io%2Flibrary%2Fedge-nope:latest", headers=tok)
    assert status == 404 and json.loads(data)["code"] == "not_found", data
    status, _, data = raw(stack.url, "GET", "//volumes", headers=tok)
    assert status == 200, data
    status, _, data = raw(stack.url, "GET", "//health")
    assert status == 200 and json.loads(data) == {"status": "ok"}
    # A name with dots that are not dot segments.
    status, _, data = raw(stack.url, "GET", "/volumes/..x", headers=tok)
    assert status == 404, data


# ---- straight to the sockets ------------------------------------------------------------------

def test_fastcgi_socket_without_subject_is_401(stack):
    sock = str(stack.run_dir / "fcgi-0.sock")
    for method, path in [("GET", "/instances"), ("GET", "/volumes"), ("DELETE", "/volumes/x"), ("GET", "/no-such"),
                         ("POST", "/images")]:
        status, headers, payload = fcgi_request(sock, base_params(path, method))
        assert status == 401, (method, path, status, payload)
        assert json.loads(payload) == {"code": "Unauthorized", "message": "authorization header required"}
        assert headers.get("www-authenticate") == "Bearer"
        # An empty subject is no subject.
        status, _, _ = fcgi_request(sock, {**base_params(path, method), "HTTP_X_AUTH_SUBJECT": ""})
        assert status == 401
    # The open route, and the same request with a subject (so the framing above is right).
    assert fcgi_request(sock, base_params("/health"))[0] == 200
    status, _, payload = fcgi_request(sock, {**base_params("/volumes"), "HTTP_X_AUTH_SUBJECT": "tester"})
    assert status == 200 and isinstance(json.loads(payload), list)
    # A REQUEST_URI that is not what nginx chose its location by (DOCUMENT_URI): 400.
    status, _, payload = fcgi_request(sock, {**base_params("/volumes"), "DOCUMENT_URI": "/health",
                                             "HTTP_X_AUTH_SUBJECT": "tester"})
    assert status == 400 and json.loads(payload)["code"] == "bad_request"


def exec_request(sock_path: str, headers: dict) -> tuple[int, dict, bytes]:
    lines = ["GET /instances/edge-nope/exec HTTP/1.1", "Host: localhost", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(sock_path)
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    first, *rest = head.decode().split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in rest)}
    return int(first.split()[1]), hdrs, body


def test_exec_socket_without_subject_is_401(stack):
    sock = str(stack.run_dir / "exec.sock")
    for headers in ({}, {"X-Auth-Subject": ""}):
        status, hdrs, body = exec_request(sock, headers)
        assert status == 401, (status, body)
        assert hdrs.get("www-authenticate") == "Bearer"
        assert json.loads(body)["code"] == "Unauthorized"
        assert "sec-websocket-accept" not in hdrs
    # With a subject the same request gets past the check (the instance does not exist).
    status, _, body = exec_request(sock, {"X-Auth-Subject": "tester"})
    assert status == 404, (status, body)


# ---- socket permissions -----------------------------------------------------------------------

def sockets(stack) -> dict:
    run = stack.run_dir
    wakes = sorted((run / "w").glob("*.sock"))
    assert wakes, "the workers' wake-up sockets"
    return {"fcgi": (run / "fcgi-0.sock", socket.SOCK_STREAM), "exec": (run / "exec.sock", socket.SOCK_STREAM),
            "provisioner-wake": (run / "provisioner.wake", socket.SOCK_DGRAM), "worker-wake": (wakes[0], socket.SOCK_DGRAM)}


CONNECT = """
import errno, os, socket, sys
path, kind = sys.argv[1], int(sys.argv[2])
caps = [l for l in open("/proc/self/status") if l.startswith("CapEff:")][0].split()[1]
assert os.geteuid() != 0 and int(caps, 16) == 0, (os.geteuid(), caps)
s = socket.socket(socket.AF_UNIX, kind)
try:
    if kind == socket.SOCK_STREAM:
        s.connect(path)
    else:
        s.sendto(b"x", path)
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"""


# A Python the other user may run (the test's own may live under root's 0700 home).
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def connect_as(user_args: list, path: Path, kind: int) -> str:
    out = subprocess.run(user_args + [PYTHON, "-c", CONNECT, str(path), str(int(kind))],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_sockets_are_0660_root_and_the_group_in_a_0750_dir(stack):
    gid = ensure_socket_group()
    st = stack.run_dir.stat()
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_gid == gid
    st = (stack.run_dir / "w").stat()
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_gid == gid
    for name, (path, _) in sockets(stack).items():
        st = path.stat()
        assert stat.S_ISSOCK(st.st_mode), name
        assert stat.S_IMODE(st.st_mode) == 0o660, (name, oct(st.st_mode))
        assert st.st_uid == 0 and st.st_gid == gid, (name, st.st_uid, st.st_gid)


def test_a_user_outside_the_group_cannot_connect(stack):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    member = ["setpriv", "--reuid=nobody", "--regid=nogroup", f"--groups={SOCKET_GROUP}", "--"]
    for name, (path, kind) in sockets(stack).items():
        assert connect_as(nobody, path, kind) == "EACCES", name
        # The same user in the group (as nginx's workers are) can: the refusal is the permission.
        assert connect_as(member, path, kind) == "ok", name
    # Even a socket in a directory it may enter: the socket's own mode refuses it.
    probe = stack.run_dir / "fcgi-0.sock"
    assert connect_as(["runuser", "-u", "nobody", "--"], probe, socket.SOCK_STREAM) == "EACCES"


# ---- tokens -------------------------------------------------------------------------------------

def test_tokens_without_exp_or_too_long_are_401(stack):
    now = int(time.time())
    s = stack.secret
    for token in (jwt(s, {"sub": "t"}), jwt(s, {"sub": "t", "iat": now}), jwt(s, {}),
                  jwt(s, claims(ttl=31 * 86400)), jwt(s, {"sub": "t", "exp": now + 40 * 86400}),
                  jwt(s, claims(ttl=600, iat=now - 31 * 86400)), mint_token(s, "t", ttl=365 * 86400)):
        for method, path in [("GET", "/volumes"), ("DELETE", "/volumes/edge-nope")]:
            r = requests.request(method, stack.url + path, headers=bearer(token), timeout=30)
            assert_unauthorized(r, INVALID)
    assert requests.get(stack.url + "/volumes", headers=bearer(jwt(s, claims(ttl=29 * 86400))), timeout=30).status_code == 200


def test_max_token_ttl_is_configurable():
    secret = "edge-secret-" + os.urandom(8).hex()
    with own_edge(secret, "1", extra_env={"HYPEMAN_MAX_TOKEN_TTL": "1h"}) as (url, _):
        ok = requests.get(url + "/_bench/static-auth", headers=bearer(jwt(secret, claims(ttl=3000))), timeout=10)
        assert ok.status_code == 200
        for token in (jwt(secret, claims(ttl=7200)), jwt(secret, claims(ttl=600, iat=int(time.time()) - 3600))):
            assert_unauthorized(requests.get(url + "/_bench/static-auth", headers=bearer(token), timeout=10), INVALID)


def test_hypeman_token_always_writes_a_bounded_exp(stack):
    tool = str(stack.bin / "hypeman-token")
    env = {**os.environ, "JWT_SECRET": stack.secret}
    env.pop("HYPEMAN_MAX_TOKEN_TTL", None)
    out = subprocess.run([tool, "--subject", "edge"], env=env, capture_output=True, text=True, check=True)
    import base64
    payload = out.stdout.strip().split(".")[1]
    c = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert c["exp"] - c["iat"] == 24 * 3600
    r = requests.get(stack.url + "/volumes", headers=bearer(out.stdout.strip()), timeout=30)
    assert r.status_code == 200
    bad = subprocess.run([tool, "--ttl", "31d"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "HYPEMAN_MAX_TOKEN_TTL" in bad.stderr and bad.stdout == ""
    assert subprocess.run([tool, "--ttl", "31d"], env={**env, "HYPEMAN_MAX_TOKEN_TTL": "60d"},
                          capture_output=True).returncode == 0


# ---- bench mode, render.sh ---------------------------------------------------------------------

def render(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "HYPEMAN_RUN_DIR": str(tmp_path / "run"), "HYPEMAN_SHARE_DIR": str(REPO), **env}
    return subprocess.run(["bash", str(REPO / "nginx" / "render.sh"), str(tmp_path / "out")], env=e,
                          capture_output=True, text=True)


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "8080", "[::]:8080", "192.168.1.1:80", "*:80", "127.0.0.1.x:80",
                                    "unix:/tmp/x.sock", "example.com:80"])
def test_render_refuses_bench_mode_on_a_non_loopback_listener(tmp_path, listen):
    r = render(tmp_path, HYPEMAN_BENCH="1", HYPEMAN_HTTP_LISTEN=listen)
    assert r.returncode == 2 and "loopback" in r.stderr, (r.returncode, r.stderr)
    assert not (tmp_path / "out" / "hypeman-bench-locations.conf").exists()
    # The TLS listener counts too.
    r = render(tmp_path, HYPEMAN_BENCH="1", HYPEMAN_HTTP_LISTEN="127.0.0.1:8080", HYPEMAN_HTTPS_LISTEN=listen,
               HYPEMAN_TLS_CERT="/x.crt", HYPEMAN_TLS_KEY="/x.key")
    assert r.returncode == 2 and "loopback" in r.stderr


def test_render_bench_files_only_in_bench_mode(tmp_path):
    for listen in ("127.0.0.1:8080", "127.9.9.9:1", "localhost:8080", "[::1]:8080"):
        r = render(tmp_path, HYPEMAN_BENCH="1", HYPEMAN_HTTP_LISTEN=listen)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "out" / "hypeman-bench-locations.conf").exists()
    # Rendering production over it removes every bench file and every /_bench/ location.
    r = render(tmp_path, HYPEMAN_HTTP_LISTEN="0.0.0.0:8080")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert not list(out.glob("*bench*"))
    for conf in out.glob("*.conf"):
        text = conf.read_text().replace(str(tmp_path), "TMP")
        assert "_bench" not in text and "bench" not in text, conf
    assert "user nobody hypeman;" in (out / "nginx.conf").read_text().replace(SOCKET_GROUP, "hypeman")
    assert "env HYPEMAN_MAX_TOKEN_TTL=2592000;" in (out / "hypeman-main.conf").read_text()


@pytest.mark.parametrize("value", ["0", "-1", "30x", "1.5d", "9999d", "30 d"])
def test_render_refuses_a_bad_max_token_ttl(tmp_path, value):
    r = render(tmp_path, HYPEMAN_MAX_TOKEN_TTL=value)
    assert r.returncode == 2 and "HYPEMAN_MAX_TOKEN_TTL" in r.stderr


def test_render_refuses_a_missing_socket_group(tmp_path):
    r = render(tmp_path, HYPEMAN_SOCKET_GROUP="hm-no-such-group")
    assert r.returncode == 2 and "groupadd" in r.stderr


@pytest.fixture(scope="module")
def bench_stack():
    st = Stack(workers=1, threads=4, registry=False, bench=True).start()
    yield st
    st.stop()


def test_bench_noauth_still_routes_and_keeps_the_path_checks(bench_stack):
    url = bench_stack.url
    assert raw(url, "GET", "/_bench/noauth/volumes")[0] == 200
    assert raw(url, "GET", "/_bench/hello")[0] == 200
    status, _, data = raw(url, "GET", "/_bench/noauth/images/docker.io%2Flibrary%2Fedge-nope:latest")
    assert status == 404, data
    for path in ("/_bench/noauth/volumes/..%2F..%2Fhealth", "/volumes/..%2F_bench%2Fnoauth%2Fvolumes",
                 "/_bench/noauth/volumes/%2e%2e"):
        status, _, data = raw(url, "DELETE", path)
        assert status in (400, 401), (path, status, data)


# ---- nginx's own 405 ----------------------------------------------------------------------------

def test_nginx_405_carries_allow_and_trace_gets_the_paths_allow(stack):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, data = raw(stack.url, method, "/openapi.yaml", body=b"{}" if method != "DELETE" else None)
        assert status == 405, (method, status)
        assert headers.get("allow") == "GET, HEAD"
        assert json.loads(data)["code"] == "method_not_allowed"
    # nginx refuses TRACE on every path before choosing a location; it is answered as the path's
    # own location would: the static file's Allow, or (after the bearer check) the app's.
    tok = bearer(stack.token())
    for path, auth, want, allow in [("/openapi.yaml", {}, 405, "GET, HEAD"), ("/health", {}, 405, "GET"),
                                    ("/instances", tok, 405, "GET, POST"), ("/instances/x/stop", tok, 405, "POST"),
                                    ("/volumes/x", tok, 405, "GET, DELETE"), ("/instances", {}, 401, None),
                                    ("/no-such", tok, 404, None), ("/volumes/..%2Fhealth", {}, 400, None)]:
        status, headers, data = raw(stack.url, "TRACE", path, headers=auth)
        assert status == want, (path, status, data)
        if allow:
            assert set(headers["allow"].split(", ")) == set(allow.split(", ")), (path, headers)
        assert json.loads(data)["code"] in ("method_not_allowed", "Unauthorized", "not_found", "bad_request")
    # The app's 405 (after auth) lists the route's methods.
    status, headers, data = raw(stack.url, "PUT", "/instances", headers=bearer(stack.token()), body=b"{}")
    assert status == 405 and set(headers["allow"].split(", ")) == {"GET", "POST"}
    # A wrong method on the open /health: the app's 405, without a token.
    status, headers, data = raw(stack.url, "POST", "/health", body=b"{}")
    assert status == 405 and headers["allow"] == "GET", (status, data)
