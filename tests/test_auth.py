"""Bearer-token auth at the edge, through the real nginx config (nginx/render.sh + nginx/HypemanAuth.pm)
in front of the real app, over HTTP and TLS.

Accepted: `Authorization: Bearer <JWT>` (scheme in any case), HS256 only, signed with the bytes
of JWT_SECRET, `exp` required, a number in the future and at most HYPEMAN_MAX_TOKEN_TTL (30 days
by default) away, as is `exp - iat` when `iat` is present; `nbf` (if present) a number not in
the future. HS384/HS512 are rejected on purpose: the edge verifies one algorithm only (upstream
hypeman accepted any HMAC). Every failure is 401 `{"code":"Unauthorized","message":<reason>}`
with `WWW-Authenticate: Bearer`, reason one of the three strings below.

The shared `stack` runs the default auth mode (verdict cache, HYPEMAN_AUTH_CACHE=1); the tests
at the end start their own nginx (no app needed) to hold both modes to the same verdicts, to
check that a cached verdict never outlives `exp`, and that an empty or missing JWT_SECRET
rejects everything. Forwarding of the token to the app is not observable from outside and is
not tested here (nginx blanks HTTP_AUTHORIZATION; see nginx/README.md).

Tokens are minted here with hmac/base64 so the tests do not share code with the minter under
test. Requests that get past auth use ids that do not exist or invalid bodies, so nothing is
created in the shared stack.
"""
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from stack import ensure_socket_group

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

REPO = Path(__file__).resolve().parent.parent

MISSING = "authorization header required"
FORMAT = "invalid authorization header format"
INVALID = "invalid token"

NOPE = "authtest-does-not-exist"

# Every route of the API (method, path). Bodies are invalid on purpose (see the module doc).
ROUTES = [
    ("GET", "/images"),
    ("POST", "/images"),
    ("GET", f"/images/{NOPE}"),
    ("DELETE", f"/images/{NOPE}"),
    ("GET", "/instances"),
    ("POST", "/instances"),
    ("GET", f"/instances/{NOPE}"),
    ("DELETE", f"/instances/{NOPE}"),
    ("POST", f"/instances/{NOPE}/standby"),
    ("POST", f"/instances/{NOPE}/restore"),
    ("POST", f"/instances/{NOPE}/stop"),
    ("POST", f"/instances/{NOPE}/start"),
    ("GET", f"/instances/{NOPE}/logs"),
    ("POST", f"/instances/{NOPE}/volumes/{NOPE}"),
    ("DELETE", f"/instances/{NOPE}/volumes/{NOPE}"),
    ("GET", "/volumes"),
    ("POST", "/volumes"),
    ("POST", "/volumes/from-archive"),
    ("GET", f"/volumes/{NOPE}"),
    ("DELETE", f"/volumes/{NOPE}"),
    ("GET", "/ingresses"),
    ("POST", "/ingresses"),
    ("GET", f"/ingresses/{NOPE}"),
    ("DELETE", f"/ingresses/{NOPE}"),
]
ROUTE_IDS = [f"{m} {p}" for m, p in ROUTES]


# ---- token minting (independent of hypeman-token and of tests/stack.py) ---------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def jwt(secret: str, claims: dict, alg: str = "HS256", header: dict | None = None) -> str:
    head = segment(header if header is not None else {"alg": alg, "typ": "JWT"})
    signing_input = f"{head}.{segment(claims)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg)
    sig = b64url(hmac.new(secret.encode(), signing_input.encode(), digest).digest()) if digest else ""
    return f"{signing_input}.{sig}"


def claims(sub="tester", ttl=3600, **extra) -> dict:
    now = int(time.time())
    c = {"iat": now, "exp": now + ttl, **extra}
    if sub is not None:
        c["sub"] = sub
    return c


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# ---- helpers -----------------------------------------------------------------------------------

def send(base: str, method: str, path: str, headers: dict | None = None) -> requests.Response:
    kw = {}
    if method == "POST":
        kw["json"] = {}
    return requests.request(method, base + path, headers=headers or {}, timeout=60, verify=False, **kw)


def assert_unauthorized(r: requests.Response, reason: str) -> None:
    assert r.status_code == 401, (r.status_code, r.text[:300])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    assert r.headers.get("WWW-Authenticate") == "Bearer", r.headers
    assert r.json() == {"code": "Unauthorized", "message": reason}


def assert_authorized(r: requests.Response) -> None:
    """Past the edge: anything but 401 (and not an edge failure reaching the app)."""
    assert r.status_code not in (401, 502, 503, 504), (r.status_code, r.text[:300])
    if r.headers.get("Content-Type", "").startswith("application/json"):
        body = r.json()
        assert not (isinstance(body, dict) and body.get("code") == "Unauthorized"), body


@pytest.fixture(params=["http", "https"])
def base(request, stack):
    return stack.url if request.param == "http" else stack.https_url


# ---- the matrix: every route x every failure class, over HTTP and TLS -------------------------

def bad_tokens(secret: str) -> dict:
    """name -> (Authorization header value, expected reason)."""
    good = jwt(secret, claims())
    h, p, s = good.split(".")
    return {
        "basic": ("Basic dXNlcjpwYXNz", FORMAT),
        "bearer-without-token": ("Bearer", FORMAT),
        "token-without-scheme": (good, FORMAT),
        "a.b.c": ("Bearer a.b.c", INVALID),
        "garbage": ("Bearer not-a-jwt", INVALID),
        "bad-signature": (f"Bearer {jwt(secret + 'x', claims())}", INVALID),
        "expired": (f"Bearer {jwt(secret, claims(ttl=-30))}", INVALID),
        "alg-none-unsigned": (f"Bearer {jwt(secret, claims(), alg='none')}", INVALID),
        "alg-none-with-hs256-signature": (
            f"Bearer {segment({'alg': 'none', 'typ': 'JWT'})}.{p}."
            + b64url(hmac.new(secret.encode(), f"{segment({'alg': 'none', 'typ': 'JWT'})}.{p}".encode(), hashlib.sha256).digest()),
            INVALID),
        "hs512": (f"Bearer {jwt(secret, claims(), alg='HS512')}", INVALID),
        "hs384": (f"Bearer {jwt(secret, claims(), alg='HS384')}", INVALID),
        "empty-secret": (f"Bearer {jwt('', claims())}", INVALID),
        "tampered-payload": (f"Bearer {h}.{segment(claims(sub='root'))}.{s}", INVALID),
        "no-exp": (f"Bearer {jwt(secret, {'sub': 'tester', 'iat': int(time.time())})}", INVALID),
        "empty-claims": (f"Bearer {jwt(secret, {})}", INVALID),
        "lifetime-over-30d": (f"Bearer {jwt(secret, claims(ttl=30 * 86400 + 60))}", INVALID),
        "exp-far-without-iat": (f"Bearer {jwt(secret, {'sub': 't', 'exp': int(time.time()) + 31 * 86400})}", INVALID),
        "issued-for-too-long": (f"Bearer {jwt(secret, claims(ttl=3600, iat=int(time.time()) - 30 * 86400))}", INVALID),
    }


BAD_NAMES = list(bad_tokens("x").keys())


@pytest.mark.parametrize("method,path", ROUTES, ids=ROUTE_IDS)
def test_no_header_is_401(base, method, path):
    assert_unauthorized(send(base, method, path), MISSING)


@pytest.mark.parametrize("method,path", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("case", BAD_NAMES)
def test_bad_credentials_are_401(stack, base, method, path, case):
    value, reason = bad_tokens(stack.secret)[case]
    assert_unauthorized(send(base, method, path, {"Authorization": value}), reason)


@pytest.mark.parametrize("method,path", ROUTES, ids=ROUTE_IDS)
def test_valid_token_passes(stack, base, method, path):
    assert_authorized(send(base, method, path, bearer(stack.token(sub="tester", ttl=3600))))


@pytest.mark.parametrize("method,path", ROUTES, ids=ROUTE_IDS)
def test_lowercase_scheme_passes(stack, base, method, path):
    token = stack.token(sub="tester", ttl=3600)
    assert_authorized(send(base, method, path, {"Authorization": f"bearer {token}"}))


# ---- token details, on a couple of routes ------------------------------------------------------

SAMPLE = [("GET", "/instances"), ("POST", f"/instances/{NOPE}/stop")]


@pytest.mark.parametrize("method,path", SAMPLE)
@pytest.mark.parametrize("scheme", ["BEARER", "Bearer", "bEaReR"])
def test_scheme_is_case_insensitive(stack, method, path, scheme):
    token = jwt(stack.secret, claims())
    assert_authorized(send(stack.url, method, path, {"Authorization": f"{scheme} {token}"}))


@pytest.mark.parametrize("method,path", SAMPLE)
def test_accepted_token_shapes(stack, method, path):
    s = stack.secret
    accepted = {
        "no-sub": jwt(s, claims(sub=None)),
        "exp-only": jwt(s, {"exp": int(time.time()) + 600}),
        "lifetime-just-under-30d": jwt(s, claims(ttl=30 * 86400 - 60)),
        "nbf-past": jwt(s, claims(nbf=int(time.time()) - 60)),
        "header-key-order": jwt(s, claims(), header={"typ": "JWT", "alg": "HS256"}),
        "header-with-kid": jwt(s, claims(), header={"alg": "HS256", "kid": "k1"}),
        "unicode-sub": jwt(s, claims(sub="zoë")),
        "via-fixture": stack.token(sub="tester", ttl=60),
    }
    for name, token in accepted.items():
        r = send(stack.url, method, path, bearer(token))
        assert r.status_code != 401, (name, r.text[:200])


@pytest.mark.parametrize("method,path", SAMPLE)
def test_rejected_token_shapes(stack, method, path):
    s = stack.secret
    good = jwt(s, claims())
    h, p, sig = good.split(".")
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # Flipping the lowest bit of the last character only touches the unused padding bits:
    # the same bytes, a non-canonical spelling.
    noncanonical = sig[:-1] + last[last.index(sig[-1]) ^ 1]
    rejected = {
        "nbf-future": jwt(s, claims(nbf=int(time.time()) + 600)),
        "exp-string": jwt(s, {"sub": "t", "exp": str(int(time.time()) + 600)}),
        "exp-null": jwt(s, {"sub": "t", "exp": None}),
        "nbf-string": jwt(s, {"sub": "t", "nbf": "0"}),
        "sub-number": jwt(s, {"sub": 42}),
        "alg-lowercase": jwt(s, claims(), header={"alg": "hs256", "typ": "JWT"}),
        "alg-RS256": jwt(s, claims(), header={"alg": "RS256", "typ": "JWT"}),
        "header-not-json": f"{b64url(b'nope')}.{p}.{sig}",
        "payload-not-json": jwt(s, claims()).split(".")[0] + "." + b64url(b"[1,2]") + "." + b64url(
            hmac.new(s.encode(), f"{h}.{b64url(b'[1,2]')}".encode(), hashlib.sha256).digest()),
        "four-parts": f"{good}.x",
        "two-parts": f"{h}.{p}",
        "empty-signature": f"{h}.{p}.",
        "truncated-signature": f"{h}.{p}.{sig[:-1]}",
        "noncanonical-signature": f"{h}.{p}.{noncanonical}",
        "signature-other-token": f"{h}.{segment(claims(sub='other'))}.{sig}",
        "secret-as-token": s,
    }
    assert noncanonical != sig
    for name, token in rejected.items():
        r = send(stack.url, method, path, bearer(token))
        assert r.status_code == 401, (name, r.status_code, r.text[:200])
        assert r.json() == {"code": "Unauthorized", "message": INVALID}, name
    for value in ("Bearer  " + good, "Bearer\t" + good, "Token " + good, "Bearerx " + good):
        r = send(stack.url, method, path, {"Authorization": value})
        assert r.status_code == 401, (value[:12], r.text[:200])


def test_unknown_paths_need_a_token_too(stack, base):
    assert_unauthorized(send(base, "GET", "/no-such-route"), MISSING)
    r = send(base, "GET", "/no-such-route", bearer(stack.token()))
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_client_cannot_inject_subject_or_skip_auth_with_headers(stack):
    # X-Auth-Subject is set by nginx only: sending it without a token changes nothing.
    r = send(stack.url, "GET", "/instances", {"X-Auth-Subject": "admin"})
    assert_unauthorized(r, MISSING)
    r = send(stack.url, "GET", "/instances", {"X-Auth-Subject": "admin", "Authorization": "Bearer a.b.c"})
    assert_unauthorized(r, INVALID)


# ---- open endpoints ------------------------------------------------------------------------------

def test_open_endpoints_need_no_token(stack, base):
    for headers in ({}, {"Authorization": "Bearer a.b.c"}, {"Authorization": "Basic eDp5"}):
        r = requests.get(base + "/health", headers=headers, timeout=30, verify=False)
        assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text[:200]
        r = requests.get(base + "/openapi.yaml", headers=headers, timeout=30, verify=False)
        assert r.status_code == 200, r.text[:200]
        assert r.headers["Content-Type"].startswith("application/yaml")
        assert r.text.startswith("openapi:")


# ---- edge errors are JSON -------------------------------------------------------------------------

def test_oversized_body_is_json_413(stack):
    body = b"x" * (1024 * 1024 + 4096)
    r = requests.post(stack.url + "/instances", data=body, headers={**bearer(stack.token()), "Content-Type": "application/json"},
                      timeout=60)
    assert r.status_code == 413
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["code"] == "payload_too_large"
    # Volume archive uploads may be large: the same size gets past nginx to the app (which
    # rejects this junk multipart body on its own terms).
    for path in ("/volumes", "/volumes/from-archive"):
        r = requests.post(stack.url + path, data=body, timeout=60,
                          headers={**bearer(stack.token()), "Content-Type": "multipart/form-data; boundary=hmtest"})
        assert r.status_code not in (401, 413, 502, 504), (path, r.status_code, r.text[:200])


# ---- our own nginx (no app behind it): both auth modes, and an empty/missing JWT_SECRET -------
# HYPEMAN_BENCH=1 gives /_bench/static-auth, the bearer check in front of a static file, so
# these need no FastCGI worker.

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def own_edge(secret: str | None, auth_cache: str, extra_env: dict | None = None):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="hm-auth-", dir="/tmp"))
    work.chmod(0o755)
    ensure_socket_group()  # render.sh gives nginx's workers the socket group
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    env.update({"HYPEMAN_RUN_DIR": str(work / "run"), "HYPEMAN_HTTP_LISTEN": f"127.0.0.1:{port}",
                "HYPEMAN_HTTPS_LISTEN": "", "HYPEMAN_SHARE_DIR": str(REPO), "HYPEMAN_NGINX_WORKERS": "2",
                "HYPEMAN_BENCH": "1", "HYPEMAN_AUTH_CACHE": auth_cache, **(extra_env or {})})
    subprocess.run(["bash", str(REPO / "nginx" / "render.sh"), str(work / "nginx")], env=env, check=True,
                   capture_output=True)
    if secret is not None:
        env["JWT_SECRET"] = secret
    log = work / "error.log"
    proc = subprocess.Popen([nginx, "-p", str(work / "nginx"), "-c", "nginx.conf", "-e", str(log),
                             "-g", "daemon off;"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 10
        while True:
            try:
                if requests.get(url + "/openapi.yaml", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.time() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.05)
        yield url, log
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("auth_cache", ["1", "0"], ids=["cached", "direct"])
def test_both_auth_modes_give_the_same_verdicts(auth_cache):
    secret = base64.b64encode(os.urandom(24)).decode()
    with own_edge(secret, auth_cache) as (url, _):
        for method in ("GET", "POST", "DELETE", "PUT"):
            # A request body must not reach (or stall) the verifier.
            body = {"json": {"name": "x" * 100}} if method in ("POST", "PUT") else {}
            for _round in range(2):  # the second round is answered from the verdict cache, if any
                for name, (value, reason) in bad_tokens(secret).items():
                    r = requests.request(method, url + "/_bench/static-auth", headers={"Authorization": value},
                                         timeout=10, **body)
                    assert r.status_code == 401, (method, name, r.status_code)
                    assert r.json() == {"code": "Unauthorized", "message": reason}, (method, name)
                r = requests.request(method, url + "/_bench/static-auth", timeout=10)
                assert_unauthorized(r, MISSING)
                for token in (jwt(secret, claims()), jwt(secret, claims(sub=None)),
                              jwt(secret, {"exp": int(time.time()) + 600})):
                    for scheme in ("Bearer", "bearer"):
                        r = requests.request(method, url + "/_bench/static-auth",
                                             headers={"Authorization": f"{scheme} {token}"}, timeout=10, **body)
                        if method == "GET":
                            assert r.status_code == 200 and r.json() == {"ok": True}, (method, r.status_code, r.text)
                        else:  # past auth: the static file itself refuses the method (with a body)
                            assert r.status_code in (200, 405), (method, r.status_code, r.text)
                            assert r.json() != {"code": "Unauthorized", "message": INVALID}


@pytest.mark.parametrize("auth_cache", ["1", "0"], ids=["cached", "direct"])
def test_a_token_stops_working_when_it_expires(auth_cache):
    secret = base64.b64encode(os.urandom(24)).decode()
    with own_edge(secret, auth_cache) as (url, _):
        token = jwt(secret, {"sub": "short", "exp": int(time.time()) + 2})
        r = requests.get(url + "/_bench/static-auth", headers=bearer(token), timeout=10)
        assert r.status_code == 200
        deadline = time.time() + 6
        while time.time() < deadline:
            r = requests.get(url + "/_bench/static-auth", headers=bearer(token), timeout=10)
            if r.status_code == 401:
                break
            time.sleep(0.25)
        assert_unauthorized(r, INVALID)


@pytest.mark.parametrize("auth_cache", ["1", "0"], ids=["cached", "direct"])
@pytest.mark.parametrize("secret_env", ["empty", "unset"])
def test_empty_secret_rejects_every_token(stack, secret_env, auth_cache):
    with own_edge("" if secret_env == "empty" else None, auth_cache) as (url, log):
        for token in (jwt("", claims()), jwt("", {"exp": int(time.time()) + 600}), jwt(stack.secret, claims())):
            for method in ("GET", "DELETE"):
                r = requests.request(method, url + "/_bench/static-auth", headers=bearer(token), timeout=10)
                assert_unauthorized(r, INVALID)
        assert_unauthorized(requests.get(url + "/_bench/static-auth", timeout=10), MISSING)
        assert "JWT_SECRET is empty" in log.read_text()


@pytest.mark.parametrize("auth_cache", ["1", "0"], ids=["cached", "direct"])
def test_subject_handed_on_is_the_tokens_sub(auth_cache):
    secret = base64.b64encode(os.urandom(24)).decode()
    with own_edge(secret, auth_cache) as (url, _):
        exp = int(time.time()) + 600
        cases = [(claims(sub="tester"), "tester"), (claims(sub="zoë"), "zoë"), (claims(sub=None), "-"),
                 (claims(sub=""), "-"), ({"exp": exp}, "-"), ({"sub": "a b/c", "exp": exp}, "a b/c")]
        for _round in range(2):  # the second round comes from the per-worker cache, if any
            for c, want in cases:
                r = requests.get(url + "/_bench/subject", headers=bearer(jwt(secret, c)), timeout=10)
                assert r.status_code == 200, (c, r.status_code, r.text)
                assert r.content.decode("utf-8") == want, c
        # Control characters never reach a header or FastCGI parameter.
        for sub in ("a\nb", "a\x00", "tab\there", "del\x7f"):
            r = requests.get(url + "/_bench/subject", headers=bearer(jwt(secret, claims(sub=sub))), timeout=10)
            assert_unauthorized(r, INVALID)


def test_verdict_cache_stays_correct_past_its_bound():
    """More distinct valid tokens than a worker keeps (4096): every one still passes with its own
    subject, a bad one never does, and nginx's workers stay up (the cache is dropped, not grown)."""
    secret = base64.b64encode(os.urandom(24)).decode()
    with own_edge(secret, "1") as (url, log):
        session = requests.Session()
        tokens = [(f"user-{i}", jwt(secret, claims(sub=f"user-{i}"))) for i in range(5000)]
        for sub, token in tokens + tokens[:50]:
            r = session.get(url + "/_bench/subject", headers=bearer(token), timeout=10)
            assert r.status_code == 200 and r.text == sub, (sub, r.status_code)
        assert_unauthorized(session.get(url + "/_bench/subject", headers=bearer(jwt(secret + "x", claims())),
                                        timeout=10), INVALID)
        assert "exited on signal" not in log.read_text()
