"""Brings up the real stack on loopback: FastCGI workers, the Provisioner, nginx with our
rendered config (HTTP + TLS), and optionally a local OCI registry with test images.

Used by the pytest fixtures, by bench/, and by `python3 tests/stack.py up` (the README's run
command). Everything lives in one short temp directory; nothing listens beyond 127.0.0.1.

Supervised by default (`Stack(supervise=True)`), as the systemd units' `Restart=on-failure`: a
FastCGI worker or the Provisioner that dies is reaped and restarted (see `Supervisor`); stops the
caller means (`stop_process`, `restart_provisioner`, or `expect_exit(name)` before killing one on
purpose) are left alone. Restarts are logged to <dir>/supervisor.log and listed in `Stack.restarts`.
"""
from __future__ import annotations

import argparse
import base64
import grp
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Where scripts/setup-guest-kernel.sh puts the guest kernel for tests and scripts/run.sh.
KERNEL_DIR = os.environ.get("HYPEMAN_KERNEL_DIR", "/var/lib/hypeman-kernel")


# The group that may connect to the app's sockets (HYPEMAN_SOCKET_GROUP): nginx's workers run
# with it; the FastCGI, exec and wake-up sockets are 0660 root:SOCKET_GROUP in a 0750 run dir.
SOCKET_GROUP = os.environ.get("HYPEMAN_SOCKET_GROUP") or "hypeman"


def ensure_socket_group(name: str = SOCKET_GROUP) -> int:
    """The gid of the socket group, created (as a system group) when missing; tests run as root."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
        return grp.getgrnam(name).gr_gid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bin_dir() -> Path:
    env = os.environ.get("HYPEMAN_BIN_DIR")
    if env:
        return Path(env)
    out = subprocess.run(["swift", "build", "--show-bin-path"], cwd=REPO, capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint_token(secret: str, sub: str | None = "tester", ttl: int = 3600, alg: str = "HS256", **extra) -> str:
    header = {"alg": alg, "typ": "JWT"}
    now = int(time.time())
    claims = {"iat": now, "exp": now + ttl, **extra}
    if sub is not None:
        claims["sub"] = sub
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg, hashlib.sha256)
    sig = b64url(hmac.new(secret.encode(), f"{h}.{p}".encode(), digest).digest()) if alg != "none" else ""
    return f"{h}.{p}.{sig}"


class Registry:
    """Debian's docker-registry on 127.0.0.1 with our own config (its default listens everywhere)."""

    def __init__(self, root: Path, port: int | None = None, htpasswd: str | None = None):
        self.root = root
        self.port = port or free_port()
        self.htpasswd = htpasswd
        self.proc: subprocess.Popen | None = None

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Registry":
        if not shutil.which("docker-registry"):
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "config.yml"
        auth = ""
        if self.htpasswd:
            auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {self.htpasswd}\n"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root}/data\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}"
        )
        log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=log, stderr=log)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"registry did not start; see {self.root}/registry.log")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Supervisor(threading.Thread):
    """Restarts a FastCGI worker or the Provisioner that exits unexpectedly, as systemd's
    `Restart=on-failure` does for the units in systemd/: an exit code other than 0 or a signal
    other than SIGHUP/SIGINT/SIGTERM/SIGPIPE. The dead process is reaped at once (no <defunct>)
    and a new one started within ~0.2 s; one that keeps dying waits longer each time (0.5 s
    doubling to 8 s, reset after 30 s up). Exits the Stack announced (`Stack.expect_exit`) are
    left alone. Every restart is logged to <stack dir>/supervisor.log and kept in `Stack.restarts`."""

    POLL = 0.1
    CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}

    def __init__(self, stack: "Stack"):
        super().__init__(name="hypeman-supervisor", daemon=True)
        self.stack = stack
        self.halt = threading.Event()
        self.history: dict[str, list[float]] = {}   # name -> recent restart times

    @classmethod
    def failed(cls, code: int) -> bool:
        return code > 0 or (code < 0 and -code not in cls.CLEAN_SIGNALS)

    def delay(self, name: str, now: float) -> float:
        recent = [t for t in self.history.get(name, []) if now - t < 30]
        self.history[name] = recent
        return 0.0 if not recent else min(8.0, 0.5 * 2 ** (len(recent) - 1))

    def run(self) -> None:
        due: dict[str, float] = {}   # name -> when its restart is due
        while not self.halt.wait(self.POLL):
            st = self.stack
            todo = []
            with st.lock:
                for name, p in list(st.procs.items()):
                    if name not in st.restartable or name in st.expected:
                        continue
                    code = p.poll()   # reaps it
                    if code is None or not self.failed(code):
                        continue
                    now = time.time()
                    if name not in due:
                        due[name] = now + self.delay(name, now)
                        st.log_supervisor(f"{name} (pid {p.pid}) exited unexpectedly ({describe_exit(code)}); "
                                          f"restarting in {due[name] - now:.1f} s")
                    if now >= due[name]:
                        todo.append((name, p, code))
            for name, old, code in todo:
                due.pop(name, None)
                self.history.setdefault(name, []).append(time.time())
                try:
                    new = st.restart(name, old)
                except Exception as e:  # noqa: BLE001 - keep supervising the others
                    st.log_supervisor(f"{name}: restart failed: {e}")
                    continue
                if new is not None:
                    st.restarts.append({"name": name, "old_pid": old.pid, "new_pid": new.pid, "code": code, "time": time.time()})
                    st.log_supervisor(f"{name} restarted: pid {old.pid} -> {new.pid}")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Stack:
    def __init__(self, workers: int = 2, threads: int = 16, registry: bool = True, bench: bool = False,
                 http_port: int | None = None, env: dict | None = None, keep: bool = False, supervise: bool = True):
        self.dir = Path(tempfile.mkdtemp(prefix="hm-", dir="/tmp"))
        self.dir.chmod(0o755)  # nginx workers (nobody:SOCKET_GROUP) must reach their files and the run dir
        self.socket_gid = ensure_socket_group()
        self.workers = workers
        self.threads = threads
        self.bench = bench
        self.keep = keep
        self.secret = base64.b64encode(os.urandom(24)).decode()
        self.http_port = http_port or free_port()
        self.https_port = free_port()
        self.extra_env = env or {}
        self.procs: dict[str, subprocess.Popen] = {}
        # Supervision: which processes are restarted when they fail, which exits are deliberate.
        self.supervise = supervise
        self.lock = threading.RLock()
        self.restartable: set[str] = set()
        self.expected: set[str] = set()
        self.restarts: list[dict] = []
        self.supervisor: Supervisor | None = None
        self.registry = Registry(self.dir / "registry") if registry else None
        self.bin = bin_dir()

    # -- addresses and tokens
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "hypeman.db"

    def token(self, sub: str | None = "tester", ttl: int = 3600) -> str:
        return mint_token(self.secret, sub, ttl)

    def env(self) -> dict:
        e = dict(os.environ)
        e.update({
            "DATA_DIR": str(self.data_dir), "HYPEMAN_RUN_DIR": str(self.run_dir), "HYPEMAN_DB": str(self.db_path),
            "JWT_SECRET": self.secret, "FCGI_THREADS": str(self.threads), "SYNC_WAIT_SECONDS": "60",
            "PULL_RESOLVE_WAIT_SECONDS": "20", "HYPEMAN_SOCKET_GROUP": SOCKET_GROUP,
        })
        if self.registry:
            e["INSECURE_REGISTRIES"] = self.registry.hostport
        e.setdefault("HYPEMAN_KERNEL_DIR", KERNEL_DIR)
        e.setdefault("QEMU_ACCEL", "tcg")
        # Tests never build bridges in the machine's own namespace: networking is off unless a
        # test gives the stack a namespace of its own (NETWORK_NETNS).
        e.setdefault("HYPEMAN_NETWORK", "off")
        e.update(self.extra_env)
        return e

    # -- lifecycle
    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        with open(self.dir / f"{name}.log", "ab") as log, self.lock:
            p = subprocess.Popen(argv, env=env or self.env(), stdout=log, stderr=log, start_new_session=True)
            self.procs[name] = p
            self.expected.discard(name)   # a fresh process is supervised again
        return p

    # -- supervision
    def expect_exit(self, name: str) -> None:
        """Announces that `name` is about to exit on purpose (a test killing it, a stop): the
        supervisor leaves it dead until it is started again."""
        with self.lock:
            self.expected.add(name)

    def restart(self, name: str, old: subprocess.Popen) -> subprocess.Popen | None:
        """Starts a new `name` in place of the failed `old` (nothing when it was replaced or its
        exit became expected meanwhile)."""
        with self.lock:
            if self.procs.get(name) is not old or name in self.expected:
                return None
        if name == "provisioner":
            self.start_provisioner()
        elif name.startswith("fcgi-"):
            self.start_worker(int(name.split("-", 1)[1]))
        else:
            return None
        return self.procs[name]

    def log_supervisor(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {msg}"
        with open(self.dir / "supervisor.log", "a") as f:
            f.write(line + "\n")
        print(line, file=sys.stderr, flush=True)

    def _start_supervisor(self) -> None:
        if self.supervise and self.supervisor is None:
            self.supervisor = Supervisor(self)
            self.supervisor.start()

    def _stop_supervisor(self) -> None:
        if self.supervisor:
            self.supervisor.halt.set()
            self.supervisor.join(30)
            self.supervisor = None

    def _wait_socket(self, path: Path, what: str, timeout: float = 15) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if path.exists():
                return
            time.sleep(0.02)
        raise RuntimeError(f"{what} did not come up ({path}); logs in {self.dir}")

    def start(self) -> "Stack":
        self.data_dir.mkdir(parents=True)
        # As systemd's RuntimeDirectory (0750, group hypeman): only root and the socket group
        # (nginx's workers) may even look inside.
        self.run_dir.mkdir(parents=True)
        os.chown(self.run_dir, -1, self.socket_gid)
        self.run_dir.chmod(0o750)
        if self.registry:
            self.registry.start()
        self.start_provisioner()
        for i in range(self.workers):
            self.start_worker(i)
        self._cert()
        self._nginx()
        self._wait_http()
        self._start_supervisor()
        return self

    def start_provisioner(self) -> None:
        (self.run_dir / "provisioner.wake").unlink(missing_ok=True)
        self.restartable.add("provisioner")
        self._spawn("provisioner", [str(self.bin / "hypeman-provisioner")])
        self._wait_socket(self.run_dir / "provisioner.wake", "provisioner")

    def start_worker(self, i: int) -> None:
        env = self.env()
        env["HYPEMAN_FCGI_SOCKET"] = str(self.run_dir / f"fcgi-{i}.sock")
        # A killed worker leaves its socket behind: waiting for the path must see the new one.
        (self.run_dir / f"fcgi-{i}.sock").unlink(missing_ok=True)
        self.restartable.add(f"fcgi-{i}")
        self._spawn(f"fcgi-{i}", [str(self.bin / "hypeman-fcgi")], env)
        self._wait_socket(self.run_dir / f"fcgi-{i}.sock", f"fastcgi worker {i}")

    def _cert(self) -> None:
        self.cert = self.dir / "tls.crt"
        self.key = self.dir / "tls.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, capture_output=True)

    def _nginx(self) -> None:
        out = self.dir / "nginx"
        out.mkdir()
        env = self.env()
        env.update({
            "HYPEMAN_RUN_DIR": str(self.run_dir), "HYPEMAN_FCGI_WORKERS": str(self.workers),
            "HYPEMAN_HTTP_LISTEN": f"127.0.0.1:{self.http_port}", "HYPEMAN_HTTPS_LISTEN": f"127.0.0.1:{self.https_port}",
            "HYPEMAN_TLS_CERT": str(self.cert), "HYPEMAN_TLS_KEY": str(self.key), "HYPEMAN_SHARE_DIR": str(REPO),
            "HYPEMAN_BENCH": "1" if self.bench else "0", "HYPEMAN_SOCKET_GROUP": SOCKET_GROUP,
        })
        subprocess.run(["bash", str(REPO / "nginx" / "render.sh"), str(out)], env=env, check=True, capture_output=True)
        self._spawn("nginx", ["nginx", "-p", str(out), "-c", "nginx.conf", "-e", str(out / "error.log"), "-g", "daemon off;"], env)

    def _wait_http(self) -> None:
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not answer /health; logs in {self.dir}")

    def stop_process(self, name: str, sig=signal.SIGTERM, timeout: float = 10) -> int | None:
        self.expect_exit(name)
        p = self.procs.get(name)
        if not p or p.poll() is not None:
            return p.returncode if p else None
        p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def restart_provisioner(self, sig=signal.SIGKILL) -> None:
        """Kills the Provisioner (by default with SIGKILL, as a crash) and starts a new one."""
        self.expect_exit("provisioner")
        p = self.procs["provisioner"]
        p.send_signal(sig)
        p.wait(10)
        self.start_provisioner()

    def push_test_images(self) -> None:
        """Builds the offline test images and pushes them to this stack's registry (once)."""
        if getattr(self, "_images_pushed", False):
            return
        subprocess.run(["bash", str(REPO / "tests" / "fixtures" / "make-test-images.sh"), self.registry.hostport,
                        str(self.dir / "images")], check=True, capture_output=True)
        self._images_pushed = True

    def image(self, repo_tag: str) -> str:
        return f"{self.registry.hostport}/{repo_tag}"

    def kill_vmms(self) -> None:
        mark = str(self.dir) + "/"
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if mark in cmd and int(p.name) != os.getpid():
                try:
                    os.kill(int(p.name), signal.SIGKILL)
                except OSError:
                    pass

    def stop(self) -> dict:
        self._stop_supervisor()
        codes = {}
        for name in list(self.procs):
            codes[name] = self.stop_process(name)
        if self.registry:
            self.registry.stop()
        # VMMs outlive the Provisioner by design; the test stack owns its data dir, so any VMM
        # still running from it (a test that failed before deleting its instance) goes too.
        self.kill_vmms()
        if not self.keep and not os.environ.get("HYPEMAN_KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return codes


def main() -> None:
    ap = argparse.ArgumentParser(description="Run the hypeman stack on loopback")
    ap.add_argument("command", choices=["up"])
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--registry-port", type=int, default=5000, help="the sample registry's port (a free one if taken)")
    args = ap.parse_args()
    st = Stack(workers=args.workers, http_port=args.port, keep=True)
    if st.registry:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", args.registry_port))
                st.registry.port = args.registry_port
            except OSError:
                pass
    st.start()
    images = []
    if st.registry:
        script = REPO / "tests" / "fixtures" / "make-test-images.sh"
        if script.exists():
            subprocess.run(["bash", str(script), st.registry.hostport, str(st.dir / "images")], check=True)
            images = [f"{st.registry.hostport}/test/busybox:latest"]
    print(f"hypeman is up: {st.url} (TLS {st.https_url}), data in {st.dir}")
    print(f"token:  export HYPEMAN_API_KEY={st.token('admin', 24 * 3600)}")
    print(f"        (mint more with: JWT_SECRET='{st.secret}' {st.bin}/hypeman-token --subject you)")
    for img in images:
        print(f"sample: curl -s -H \"Authorization: Bearer $HYPEMAN_API_KEY\" -d '{{\"name\":\"{img}\"}}' {st.url}/images")
    print("Ctrl-C stops everything.")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        st.stop()


if __name__ == "__main__":
    main()
