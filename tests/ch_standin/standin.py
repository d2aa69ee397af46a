#!/usr/bin/env python3
"""A stand-in for `cloud-hypervisor --api-socket PATH` (the v48 REST API), for tests.

No Cloud Hypervisor binary can run on the CI machines (see cloud-hypervisor-notes.md §0), so the
driver is tested against this program instead. It mimics the parts of CH that a VM manager sees:

* the command line (`--api-socket path=X | X | fd=N`, `-v`, `--log-file`, `--event-monitor`,
  `--seccomp`, `--version`); VM options on the command line are refused (not implemented);
* the HTTP server (micro_http): HTTP/1.1 on a Unix socket, bodies read by Content-Length only
  (a chunked body is read as empty and its bytes are then parsed as the next request), a
  51,200-byte body limit, `Expect: 100-continue` answered with a 100, keep-alive connections,
  status lines without a reason phrase, `Server: Cloud Hypervisor API`;
* the routes of v48's `HTTP_ROUTES` (checked against the OpenAPI document at start-up) and the
  handlers' rules: body-less actions answer 400 to a body, body actions answer 400 without one,
  bodies must deserialize (here: validate against the OpenAPI schema), 404 `["Not Found"]` for
  unknown paths, 500 with the error chain (a JSON array of strings) for every VMM error;
* the VMM and VM state machines (`vm.create` stores, `vm.boot` validates and runs,
  `vm.shutdown` keeps the config, `vm.delete` drops it, pause/resume transitions, snapshot only
  when paused into an existing directory with `create_new` files, restore only into a VMM with
  no config and coming back Paused, virtio-mem/ACPI resize rules, hot-plug ids and device tree,
  `vmm.shutdown` answering 200 then exiting and removing its socket);
* a guest: it writes a line to the serial file at boot/restore, and on `vm.power-button` it
  powers off (the VMM then exits, as CH does) unless CH_STANDIN_GUEST_POWEROFF=ignore.

Environment:
  CH_API_SPEC                 the OpenAPI file (default: <repo>/../shared/reference/cloud-hypervisor-api-v48.yaml)
  CH_STANDIN_LOG              append one JSON line per HTTP request (what was sent, what was answered)
  CH_STANDIN_VERSION          the `version` vmm.ping reports (default 48.0.0)
  CH_STANDIN_GUEST_POWEROFF   `exit` (default) or `ignore`: what the guest does on the power button
  CH_STANDIN_POWEROFF_DELAY   seconds between the power button and the guest powering off (default 0.2)
  CH_STANDIN_GUEST_VSOCK      a directory of Unix sockets `<port>.sock` that stand for the guest's
                              AF_VSOCK listeners (hybrid vsock `CONNECT <port>` reaches them)

Known differences from the real VMM: there is no guest, so nothing runs; `memory-ranges` holds
the stand-in's guest state instead of a RAM image the size of guest memory; no tap is opened;
migration and coredump are not implemented (500 and 404, as a build without them).
"""

import errno
import json
import os
import re
import selectors
import threading
import signal
import socket
import sys
import time
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - reported to the caller
    sys.stderr.write("ch-standin: PyYAML is required (pip install pyyaml)\n")
    sys.exit(1)
try:
    import jsonschema
except ImportError:  # pragma: no cover
    sys.stderr.write("ch-standin: jsonschema is required (pip install jsonschema)\n")
    sys.exit(1)

HTTP_ROOT = "/api/v1"
MAX_PAYLOAD = 51200          # micro_http's default body limit; CH does not raise it
MAX_REQUEST_LINE = 1024
MIB = 1 << 20

# v48's HTTP_ROUTES (vmm/src/api/http/mod.rs). `vm.nmi` is served although the YAML names it
# `/vmm.nmi`; `vm.coredump` exists only in guest_debug builds, so it is not served here.
ROUTES = {
    "vm.add-device", "vm.add-user-device", "vm.add-disk", "vm.add-fs", "vm.add-net",
    "vm.add-pmem", "vm.add-vdpa", "vm.add-vsock", "vm.boot", "vm.counters", "vm.create",
    "vm.delete", "vm.info", "vm.pause", "vm.power-button", "vm.reboot", "vm.receive-migration",
    "vm.remove-device", "vm.resize", "vm.resize-zone", "vm.restore", "vm.resume",
    "vm.send-migration", "vm.shutdown", "vm.snapshot", "vmm.ping", "vmm.shutdown", "vm.nmi",
}
# Routes whose handler rejects any body (vm_action_put_handler! in http_endpoint.rs).
BODYLESS_ACTIONS = {"vm.boot", "vm.delete", "vm.shutdown", "vm.reboot", "vm.pause", "vm.resume",
                    "vm.power-button", "vm.nmi"}
# The route the YAML gets wrong, with the method the server really serves.
SPEC_FIXUPS = {"vm.nmi": ("/vmm.nmi", "put")}

REASONS = {100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
           429: "Too Many Requests", 500: "Internal Server Error"}


class APIError(Exception):
    """An error answered with `status` and CH's body: the error chain as a JSON array."""

    def __init__(self, status, chain, body=None):
        super().__init__(chain)
        self.status = status
        self.chain = chain
        self.body = body if body is not None else dumps(chain)


def dumps(value):
    """serde_json's compact form."""
    return json.dumps(value, separators=(",", ":"))


def vmm_error(*chain):
    return APIError(500, ["Error from API", *chain])


def bad_request():
    return APIError(400, ["Bad Request"])


def os_error_text(e):
    return f"{os.strerror(e.errno)} (os error {e.errno})"


class Terminate(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# The OpenAPI document


def default_spec_path():
    here = Path(__file__).resolve()
    repo = here.parent.parent.parent
    return repo.parent / "shared" / "reference" / "cloud-hypervisor-api-v48.yaml"


class Spec:
    """Routes, methods and request schemas from the OpenAPI document."""

    def __init__(self, path):
        with open(path, "r", encoding="utf-8") as f:
            self.doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.path = str(path)
        self.components = self.doc.get("components", {})
        self.ops = {}   # name -> {method: {"ref": str|None, "required": bool}}
        self.responses = {}   # (name, method, status) -> schema ref
        for p, item in self.doc.get("paths", {}).items():
            name = p.lstrip("/")
            for method, op in item.items():
                if method not in ("get", "put", "post", "patch", "delete"):
                    continue
                rb = op.get("requestBody")
                ref = None
                if rb:
                    ref = rb.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
                for code, resp in (op.get("responses") or {}).items():
                    rref = (resp or {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
                    if rref:
                        self.responses[(name, method.upper(), int(code))] = rref
                self.ops.setdefault(name, {})[method.upper()] = {
                    "ref": ref, "required": bool(rb and rb.get("required")), "has_body": rb is not None,
                }
        for name, (spec_path, method) in SPEC_FIXUPS.items():
            src = self.ops.get(spec_path.lstrip("/"), {}).get(method.upper())
            if src is not None and name not in self.ops:
                self.ops[name] = {method.upper(): src}
        missing = sorted(r for r in ROUTES if r not in self.ops)
        if missing:
            raise SystemExit(f"ch-standin: {self.path} lacks routes the v48 server serves: {missing}")
        self._validators = {}

    def validator(self, ref):
        v = self._validators.get(ref)
        if v is None:
            v = jsonschema.Draft4Validator({"$ref": ref, "components": self.components})
            self._validators[ref] = v
        return v

    def errors(self, ref, value):
        return sorted((f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                       for e in self.validator(ref).iter_errors(value)))

    def schema(self, name):
        return self.components.get("schemas", {}).get(name, {})

    def fill_defaults(self, schema_name, obj):
        """Adds the schema's `default` values to `obj` (serde's #[serde(default)] behaviour)."""
        if not isinstance(obj, dict):
            return obj
        props = self.schema(schema_name).get("properties", {})
        for key, prop in props.items():
            if key not in obj and "default" in prop:
                obj[key] = prop["default"]
            elif key in obj:
                ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
                if ref:
                    sub = ref.rsplit("/", 1)[-1]
                    if isinstance(obj[key], list):
                        for item in obj[key]:
                            self.fill_defaults(sub, item)
                    else:
                        self.fill_defaults(sub, obj[key])
        return obj


# ------------------------------------------------------------------------------------------------
# HTTP (micro_http's parsing rules)


class Request:
    def __init__(self, method, target, version):
        self.method = method
        self.target = target
        self.version = version
        self.headers = []
        self.content_length = None
        self.chunked = False
        self.transfer_encoding = None
        self.expect = False
        self.body = None          # bytes, or None when Content-Length was absent or 0


class ParseError(Exception):
    pass


class Connection:
    def __init__(self, sock, number):
        self.sock = sock
        self.number = number
        self.buf = bytearray()
        self.pending = None       # Request whose body is still arriving
        self.requests_seen = 0
        self.closed = False

    def parse(self, on_interim, out):
        """Appends the complete requests in the buffer to `out`; raises ParseError on invalid input."""
        while True:
            if self.pending is not None:
                need = self.pending.content_length
                if len(self.buf) < need:
                    return
                self.pending.body = bytes(self.buf[:need])
                del self.buf[:need]
                out.append(self.pending)
                self.pending = None
                continue
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                first = self.buf.find(b"\r\n")
                if (first < 0 and len(self.buf) > MAX_REQUEST_LINE) or first > MAX_REQUEST_LINE:
                    raise ParseError("Invalid request.")
                if first == 0:   # stray CRLF between requests
                    del self.buf[:2]
                    continue
                return
            head = bytes(self.buf[:end]).decode("utf-8", "replace")
            del self.buf[:end + 4]
            lines = head.split("\r\n")
            while lines and lines[0] == "":
                lines.pop(0)
            if not lines:
                continue
            req = self._request_line(lines[0])
            for line in lines[1:]:
                self._header(req, line)
            if req.content_length:
                if req.content_length > MAX_PAYLOAD:
                    raise ParseError(f"Request payload with size {req.content_length} is larger than "
                                     f"the limit of {MAX_PAYLOAD} allowed by server.")
                if req.expect:
                    on_interim(req)
                self.pending = req
            else:
                out.append(req)

    @staticmethod
    def _request_line(line):
        parts = line.split(" ")
        if len(parts) != 3:
            raise ParseError("Invalid request.")
        method, target, version = parts
        if method not in ("GET", "PUT", "PATCH"):
            raise ParseError("Invalid HTTP Method: Unsupported HTTP method.")
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise ParseError("Invalid HTTP Version: Unsupported HTTP version.")
        return Request(method, target, version)

    @staticmethod
    def _header(req, line):
        if ":" not in line:
            raise ParseError(f"Invalid header. Reason: Invalid header format: {line}")
        name, value = line.split(":", 1)
        value = value.strip()
        req.headers.append([name.strip(), value])
        key = name.strip().lower()
        if key == "content-length":
            try:
                req.content_length = int(value)
                if req.content_length < 0 or req.content_length > 0xFFFFFFFF:
                    raise ValueError
            except ValueError:
                raise ParseError(f"Invalid header. Reason: Invalid value. Key:{name}; Value:{value}")
        elif key == "transfer-encoding":
            req.transfer_encoding = value
            if value == "chunked":
                req.chunked = True
            elif value != "identity":
                raise ParseError(f"Invalid header. Reason: Unsupported value. Key:{name}; Value:{value}")
        elif key == "expect":
            if value != "100-continue":
                raise ParseError(f"Invalid header. Reason: Unsupported value. Key:{name}; Value:{value}")
            req.expect = True


def render(status, body=None, content_length=True):
    """A response as micro_http writes it (no reason phrase; Content-Type only with a length)."""
    lines = [f"HTTP/1.1 {status} ", "Server: Cloud Hypervisor API", "Connection: keep-alive"]
    data = b""
    if body is not None:
        data = body.encode("utf-8") if isinstance(body, str) else body
    if status not in (100, 204) and content_length:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + data


# ------------------------------------------------------------------------------------------------
# The VMM


class VM:
    """A booted (or restored) VM object: CH's `Vm`."""

    def __init__(self, state, guest):
        self.state = state
        self.guest = guest                    # stand-in guest state: carried through snapshots
        self.device_tree = {}
        self.requested_hotplug = 0            # virtio-mem requested size
        self.current_ram = 0                  # ACPI: current RAM size
        self.boot_ram = 0                     # ACPI: RAM at boot; the hotplug region follows it
        self.acpi_slots = 0
        self.poweroff_pending = False


class VMM:
    def __init__(self, spec, args):
        self.spec = spec
        self.args = args
        self.config = None                     # the stored VmConfig (defaults filled in)
        self.vm = None
        self.next_device = 0
        self.next_bdf = 2
        self.timers = []                       # (when, callback)
        self.exit_code = None
        self.version = os.environ.get("CH_STANDIN_VERSION", "48.0.0")
        self.guest_mode = os.environ.get("CH_STANDIN_GUEST_POWEROFF", "exit")
        try:
            self.poweroff_delay = float(os.environ.get("CH_STANDIN_POWEROFF_DELAY", "0.2"))
        except ValueError:
            self.poweroff_delay = 0.2
        self.vsock_listener = None
        self.vsock_path = None
        self.events = args.get("event_monitor")
        self.event("vmm", "starting")

    # -- events and logs ------------------------------------------------------------------------

    def event(self, source, name, properties=None):
        if self.events is None:
            return
        now = time.time()
        record = {"timestamp": {"secs": int(now), "nanos": int((now % 1) * 1e9)},
                  "source": source, "event": name, "properties": properties}
        try:
            self.events.write(json.dumps(record, indent=2) + "\n")
            self.events.flush()
        except OSError:
            pass

    def log(self, level, message):
        if self.args.get("verbosity", 0) >= level:
            out = self.args.get("log_file") or sys.stderr
            out.write(f"cloud-hypervisor: {time.monotonic():.6}s: <vmm> INFO:standin: {message}\n")
            out.flush()

    # -- config helpers -------------------------------------------------------------------------

    def with_defaults(self, cfg):
        cfg = json.loads(dumps(cfg))
        cfg.setdefault("cpus", {"boot_vcpus": 1, "max_vcpus": 1})
        cfg["cpus"].setdefault("topology", None)
        cfg["cpus"].setdefault("max_phys_bits", 46)
        cfg["cpus"].setdefault("affinity", None)
        cfg["cpus"].setdefault("features", {"amx": False})
        cfg.setdefault("memory", {"size": 512 * MIB})
        mem = cfg["memory"]
        mem.setdefault("hotplug_size", None)
        mem.setdefault("hotplugged_size", None)
        mem.setdefault("hugepage_size", None)
        mem.setdefault("zones", None)
        cfg.setdefault("rng", {"src": "/dev/urandom"})
        cfg.setdefault("serial", {"mode": "Null"})
        cfg.setdefault("console", {"mode": "Tty"})
        for key in ("serial", "console"):
            cfg[key].setdefault("file", None)
            cfg[key].setdefault("socket", None)
        for key in ("disks", "net", "fs", "pmem", "devices", "vdpa", "vsock", "numa", "balloon",
                    "platform", "tpm", "pci_segments", "rate_limit_groups", "landlock_rules"):
            cfg.setdefault(key, None)
        return self.spec.fill_defaults("VmConfig", cfg)

    def validate_config(self, cfg):
        """VmConfig::validate (the checks a manager can trip)."""
        payload = cfg.get("payload")
        if not payload or not (payload.get("kernel") or payload.get("firmware") or payload.get("igvm")):
            raise ValueError(["Payload configuration is not bootable",
                              "No bootable item (kernel, firmware or igvm) was specified"])
        if payload.get("kernel") and payload.get("firmware"):
            raise ValueError(["Payload configuration is not bootable",
                              "Payload contains both a kernel and a firmware"])
        for key in ("serial", "console"):
            if cfg[key]["mode"] == "File" and not cfg[key].get("file"):
                raise ValueError(["Path missing when using file console mode"])
            if cfg[key]["mode"] == "Socket" and not cfg[key].get("socket"):
                raise ValueError(["Path missing when using socket console mode"])
        if cfg["cpus"]["max_vcpus"] < cfg["cpus"]["boot_vcpus"]:
            raise ValueError(["Max is less than boot"])
        seen = set()
        for key in ("disks", "net", "fs", "pmem", "devices", "vdpa"):
            for dev in cfg.get(key) or []:
                ident = dev.get("id")
                if ident is None:
                    continue
                if ident.startswith("__"):
                    raise ValueError([f"Identifier {ident} is not invalid"])
                if ident in seen:
                    raise ValueError([f"Identifier {ident} is not unique"])
                seen.add(ident)
        vsock = cfg.get("vsock")
        if vsock and vsock["cid"] in (0, 1, 2, 0xFFFFFFFFFFFFFFFF):
            raise ValueError([f"{vsock['cid']} is a special VSOCK CID"])
        mem = cfg["memory"]
        if mem.get("hotplug_method", "Acpi") not in ("Acpi", "VirtioMem"):
            raise ValueError(["Invalid memory hotplug method"])

    def alloc_id(self, prefix):
        ident = f"_{prefix}{self.next_device}"
        self.next_device += 1
        return ident

    def add_node(self, vm, ident):
        bdf = f"0000:00:{self.next_bdf:02x}.0"
        self.next_bdf += 1
        pci = f"_virtio-pci-{ident}"
        vm.device_tree[ident] = {"id": ident, "resources": [], "parent": pci, "children": [],
                                 "pci_bdf": None}
        vm.device_tree[pci] = {"id": pci, "resources": [{"PciBar": {"index": 0, "base": 0, "size": 0x80000,
                                                                   "type_": "Mmio64", "prefetchable": False}}],
                               "parent": None, "children": [ident], "pci_bdf": bdf}
        return bdf

    def build_device_tree(self, vm):
        for name in ("__rng", "__serial", "__console"):
            vm.device_tree[name] = {"id": name, "resources": [], "parent": None, "children": [],
                                    "pci_bdf": None}
        prefixes = {"disks": "disk", "net": "net", "fs": "fs", "pmem": "pmem", "devices": "vfio",
                    "vdpa": "vdpa"}
        for key, prefix in prefixes.items():
            for dev in self.config.get(key) or []:
                if not dev.get("id"):
                    dev["id"] = self.alloc_id(prefix)
                self.add_node(vm, dev["id"])
        vsock = self.config.get("vsock")
        if vsock:
            if not vsock.get("id"):
                vsock["id"] = self.alloc_id("vsock")
            self.add_node(vm, vsock["id"])

    # -- devices the host sees (serial file, vsock socket) -----------------------------------------

    def open_consoles(self, chain_head):
        serial = self.config["serial"]
        if serial["mode"] == "File":
            try:
                with open(serial["file"], "wb"):
                    pass          # File::create truncates
            except OSError as e:
                raise vmm_error(chain_head, "Error creating console devices", "Error creating serial output file",
                                os_error_text(e))
        if self.config["console"]["mode"] == "Socket":
            raise vmm_error(chain_head, "Error creating console devices", "Socket is not supported for console")

    def serial_write(self, text):
        serial = self.config["serial"] if self.config else None
        if serial and serial["mode"] == "File" and serial.get("file"):
            try:
                with open(serial["file"], "a", encoding="utf-8") as f:
                    f.write(text)
            except OSError:
                pass

    def bind_vsock(self, chain_head):
        vsock = self.config.get("vsock")
        if not vsock:
            return
        path = vsock["socket"]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(path)
            s.listen(16)
        except OSError as e:
            s.close()
            raise vmm_error(chain_head, "Error from device manager", "Cannot create virtio-vsock device",
                            "Error creating vsock backend", "Error binding the host socket", os_error_text(e))
        s.setblocking(False)
        self.vsock_listener = s
        self.vsock_path = path

    def release_vsock(self):
        """Vsock::shutdown removes the socket file (a SIGKILL leaves it behind)."""
        if self.vsock_listener is not None:
            self.vsock_listener.close()
            self.vsock_listener = None
        if self.vsock_path:
            try:
                os.unlink(self.vsock_path)
            except OSError:
                pass
            self.vsock_path = None

    # -- VM lifecycle ---------------------------------------------------------------------------

    def guest_text(self, what):
        return f"[ch-standin] guest {what}: boot_id={self.vm.guest['boot_id']} memory={self.memory_total()}\n"

    def memory_total(self):
        mem = self.config["memory"]
        total = mem["size"] + (mem.get("hotplugged_size") or 0)
        for zone in mem.get("zones") or []:
            total += zone["size"] + (zone.get("hotplugged_size") or 0)
        return total

    def new_vm(self, chain_head):
        """Vm::new: validation, payload files, disks, vsock."""
        try:
            self.validate_config(self.config)
        except ValueError as e:
            raise vmm_error(chain_head, "Failed to validate config", *e.args[0])
        payload = self.config["payload"]
        for key, text in (("kernel", "Cannot open kernel file"), ("initramfs", "Cannot open initramfs file"),
                          ("firmware", "Cannot open kernel file")):
            if payload.get(key):
                try:
                    with open(payload[key], "rb"):
                        pass
                except OSError as e:
                    raise vmm_error(chain_head, text, os_error_text(e))
        for disk in self.config.get("disks") or []:
            if disk.get("path"):
                try:
                    with open(disk["path"], "rb" if disk.get("readonly") else "r+b"):
                        pass
                except OSError as e:
                    raise vmm_error(chain_head, "Error from device manager", "Failed to create virtio-blk device",
                                    "Failed to open disk image", os_error_text(e))
        vm = VM("Created", {"boot_id": os.urandom(8).hex(), "ticks": 0})
        mem = self.config["memory"]
        vm.requested_hotplug = mem.get("hotplugged_size") or 0
        vm.current_ram = mem["size"]
        vm.boot_ram = mem["size"]
        self.build_device_tree(vm)
        self.bind_vsock(chain_head)
        return vm

    def shutdown_vm(self):
        """Vm::shutdown and what follows in vm_shutdown: the VM object is dropped."""
        if self.vm is None:
            raise vmm_error("The VM could not shutdown", "VM is not running")
        if self.vm.state not in ("Created", "Running", "Paused", "BreakPoint"):
            raise vmm_error("The VM could not shutdown",
                            f"invalid VM state transition: {self.vm.state} to Shutdown")
        self.release_vsock()
        self.vm = None
        self.event("vm", "shutdown")

    def delete_vm(self):
        if self.config is None:
            return
        if self.vm is not None:
            self.shutdown_vm()
        self.config = None
        self.event("vm", "deleted")

    def guest_poweroff(self):
        """The guest powered off: the VM exit event makes the VMM shut down and exit (code 0)."""
        if self.vm is None:
            return
        self.vm.state = "Shutdown"
        self.log(1, "VM exit event")
        try:
            self.delete_vm()
        except APIError:
            self.release_vsock()
        self.event("vmm", "shutdown")
        self.exit_code = 0

    # -- handlers -------------------------------------------------------------------------------

    def handle(self, name, method, body):
        """Returns (status, body_or_None); raises APIError."""
        fn = getattr(self, "h_" + name.replace(".", "_").replace("-", "_"))
        return fn(body)

    def h_vmm_ping(self, _):
        return 200, dumps({"build_version": f"v{self.version.rsplit('.', 1)[0]}-standin",
                                "version": self.version, "pid": os.getpid(),
                                "features": ["kvm", "io_uring"]})

    def h_vmm_shutdown(self, _):
        try:
            self.delete_vm()
        except APIError as e:
            raise vmm_error("The VMM could not shutdown", *e.chain[2:])
        self.event("vmm", "shutdown")
        self.exit_code = 0
        return 200, ""

    def h_vm_create(self, cfg):
        if self.config is not None:
            raise vmm_error("The VM could not be created", "VM is already created")
        self.config = self.with_defaults(cfg)
        try:
            self.open_consoles("The VM could not be created")
        except APIError:
            self.config = None
            raise
        return 204, None

    def h_vm_boot(self, _):
        head = "The VM could not boot"
        self.event("vm", "booting")
        if self.config is None:
            raise vmm_error(head, "VM config is missing")
        if self.vm is None:
            self.vm = self.new_vm(head)
        if self.vm.state == "Paused":
            return self.h_vm_resume(None)
        if self.vm.state not in ("Created", "Shutdown"):
            raise vmm_error(head, f"invalid VM state transition: {self.vm.state} to Running")
        self.vm.state = "Running"
        self.serial_write(self.guest_text("booted"))
        self.event("vm", "booted")
        return 204, None

    def h_vm_shutdown(self, _):
        self.shutdown_vm()
        return 204, None

    def h_vm_delete(self, _):
        self.delete_vm()
        return 204, None

    def h_vm_reboot(self, _):
        if self.vm is None:
            raise vmm_error("The VM could not reboot", "VM is not created")
        self.event("vm", "rebooting")
        self.release_vsock()
        self.vm = None
        self.open_consoles("The VM could not reboot")
        self.vm = self.new_vm("The VM could not reboot")
        self.vm.state = "Running"
        self.serial_write(self.guest_text("rebooted"))
        self.event("vm", "rebooted")
        return 204, None

    def h_vm_pause(self, _):
        if self.vm is None:
            raise vmm_error("The VM could not be paused", "VM is not running")
        if self.vm.state not in ("Created", "Running"):
            raise vmm_error("The VM could not be paused", "Cannot pause VM",
                            "Failed to pause migratable component",
                            f"Invalid transition: InvalidStateTransition({self.vm.state}, Paused)")
        self.event("vm", "pausing")
        self.vm.state = "Paused"
        self.event("vm", "paused")
        return 204, None

    def h_vm_resume(self, _):
        if self.vm is None:
            raise vmm_error("The VM could not resume", "VM is not running")
        if self.vm.state not in ("Created", "Paused", "Shutdown", "BreakPoint"):
            raise vmm_error("The VM could not resume", "Cannot resume VM",
                            "Failed to resume migratable component",
                            f"Invalid transition: InvalidStateTransition({self.vm.state}, Running)")
        self.event("vm", "resuming")
        restored = self.vm.guest.pop("restored", False)
        self.vm.state = "Running"
        if restored:
            self.serial_write(self.guest_text("resumed from snapshot"))
        self.event("vm", "resumed")
        if self.vm.poweroff_pending:
            self.vm.poweroff_pending = False
            self.schedule_poweroff()
        return 204, None

    def schedule_poweroff(self):
        vm = self.vm

        def fire():
            if self.vm is vm and vm.state == "Running":
                self.guest_poweroff()
        self.timers.append((time.monotonic() + self.poweroff_delay, fire))

    def h_vm_power_button(self, _):
        if self.vm is None:
            raise vmm_error("Error triggering power button", "VM is not running")
        if self.guest_mode == "exit":
            if self.vm.state == "Running":
                self.schedule_poweroff()
            else:
                self.vm.poweroff_pending = True
        return 204, None

    def h_vm_nmi(self, _):
        if self.vm is None:
            raise vmm_error("Error triggering NMI", "VM is not running")
        return 204, None

    def h_vm_info(self, _):
        if self.config is None:
            raise vmm_error("The VM info is not available", "VM is not created")
        state = self.vm.state if self.vm is not None else "Created"
        info = {"config": self.config, "state": state, "memory_actual_size": self.memory_total(),
                "device_tree": self.vm.device_tree if self.vm is not None else None}
        return 200, dumps(info)

    def h_vm_counters(self, _):
        if self.vm is None:
            raise vmm_error("The VM info is not available", "VM is not running")
        counters = {}
        for disk in self.config.get("disks") or []:
            counters[disk["id"]] = {"read_bytes": 0, "read_ops": 0, "write_bytes": 0, "write_ops": 0,
                                    "read_latency_min": 0, "read_latency_max": 0, "read_latency_avg": 0,
                                    "write_latency_min": 0, "write_latency_max": 0, "write_latency_avg": 0}
        for net in self.config.get("net") or []:
            counters[net["id"]] = {"rx_bytes": 0, "rx_frames": 0, "tx_bytes": 0, "tx_frames": 0}
        return 200, dumps(counters)

    def h_vm_resize(self, body):
        head = "The VM could not be resized"
        if self.config is None:
            raise vmm_error(head, "VM is not created")
        vcpus, ram, balloon = body.get("desired_vcpus"), body.get("desired_ram"), body.get("desired_balloon")
        if self.vm is None:
            if vcpus is not None:
                self.config["cpus"]["boot_vcpus"] = vcpus
            if ram is not None:
                self.config["memory"]["size"] = ram
            if balloon is not None and self.config.get("balloon"):
                self.config["balloon"]["size"] = balloon
            return 204, None
        self.event("vm", "resizing")
        if vcpus is not None:
            if vcpus > self.config["cpus"]["max_vcpus"]:
                raise vmm_error(head, "Error from CPU manager", "Error resizing the number of vCPUs",
                                "Requested vCPUs exceed maximum")
            self.config["cpus"]["boot_vcpus"] = vcpus
        if ram is not None:
            mem = self.config["memory"]
            method = mem.get("hotplug_method", "Acpi")
            if mem.get("zones"):
                raise vmm_error(head, "Memory manager error",
                                "Impossible to resize guest memory if it is backed by user defined memory regions")
            if method == "VirtioMem":
                if ram >= mem["size"]:
                    if not mem.get("hotplug_size"):
                        raise vmm_error(head, "Memory manager error", "No virtio-mem resizing handler found")
                    want = ram - mem["size"]
                    why = None
                    if want == self.vm.requested_hotplug:
                        why = f"new size 0x{want:x} and requested_size are identical"
                    elif want > mem["hotplug_size"]:
                        why = f"new size 0x{want:x} is bigger than region_size 0x{mem['hotplug_size']:x}"
                    elif want % (2 * MIB):
                        why = f"new size 0x{want:x} is not aligned on block_size 0x{2 * MIB:x}"
                    if why:
                        raise vmm_error(head, "Memory manager error", "Failed to virtio-mem resize",
                                        "Resize invalid argument",
                                        f"Failed to update virtio configuration: ResizeError({why})")
                    self.vm.requested_hotplug = want
                mem["hotplugged_size"] = ram - mem["size"] if ram > mem["size"] else None
            else:
                if ram > self.vm.current_ram:
                    if self.vm.acpi_slots >= 8:
                        raise vmm_error(head, "Memory manager error", "No ACPI slot available")
                    if (ram - self.vm.current_ram) % (128 * MIB):
                        raise vmm_error(head, "Memory manager error",
                                        "The requested hotplug memory addition is not a valid size")
                    if ram > self.vm.boot_ram + (mem.get("hotplug_size") or 0):
                        raise vmm_error(head, "Memory manager error", "Not enough space in the hotplug RAM region")
                    self.vm.current_ram = ram
                    self.vm.acpi_slots += 1
                mem["size"] = ram
        if balloon is not None:
            if not self.config.get("balloon"):
                raise vmm_error(head, "Error from device manager", "No balloon device")
            self.config["balloon"]["size"] = balloon
        self.event("vm", "resized")
        return 204, None

    def h_vm_resize_zone(self, body):
        head = "The memory zone could not be resized"
        if self.config is None:
            raise vmm_error(head, "VM is not created")
        for zone in self.config["memory"].get("zones") or []:
            if zone["id"] == body.get("id"):
                if self.vm is None:
                    zone["size"] = body["desired_ram"]
                else:
                    zone["hotplugged_size"] = body["desired_ram"]
                return 204, None
        raise vmm_error(head, "Failed resizing a memory zone")

    def add_device(self, body, key, prefix, head):
        if self.config is None:
            raise vmm_error(head, "VM is not created")
        trial = json.loads(dumps(self.config))
        if key == "vsock":
            if trial.get("vsock"):
                raise vmm_error(head, "Too many virtio-vsock devices")
            trial["vsock"] = body
        else:
            trial[key] = (trial.get(key) or []) + [body]
        try:
            self.validate_config(trial)
        except ValueError as e:
            raise vmm_error(head, "Failed to validate config", *e.args[0])
        if self.vm is None:
            if key == "vsock":
                self.config["vsock"] = body
            else:
                self.config[key] = (self.config.get(key) or []) + [body]
            return 204, None
        ident = body.get("id")
        if ident is not None and ident in self.vm.device_tree:
            raise vmm_error(head, "Error from device manager", f"Invalid identifier as it is not unique: {ident}")
        if key == "disks" and body.get("path"):
            try:
                with open(body["path"], "rb" if body.get("readonly") else "r+b"):
                    pass
            except OSError as e:
                raise vmm_error(head, "Error from device manager", "Failed to create virtio-blk device",
                                "Failed to open disk image", os_error_text(e))
        if ident is None:
            ident = self.alloc_id(prefix)
            body["id"] = ident
        bdf = self.add_node(self.vm, ident)
        if key == "vsock":
            self.config["vsock"] = body
            self.bind_vsock(head)
        else:
            self.config[key] = (self.config.get(key) or []) + [body]
        self.event("vm", "device-added", {"id": ident})
        return 200, dumps({"id": ident, "bdf": bdf})

    def h_vm_add_disk(self, body):
        return self.add_device(self.spec.fill_defaults("DiskConfig", body), "disks", "disk",
                               "The disk could not be added to the VM")

    def h_vm_add_net(self, body):
        return self.add_device(self.spec.fill_defaults("NetConfig", body), "net", "net",
                               "The network device could not be added to the VM")

    def h_vm_add_fs(self, body):
        return self.add_device(body, "fs", "fs", "The fs could not be added to the VM")

    def h_vm_add_pmem(self, body):
        return self.add_device(self.spec.fill_defaults("PmemConfig", body), "pmem", "pmem",
                               "The pmem device could not be added to the VM")

    def h_vm_add_vsock(self, body):
        return self.add_device(body, "vsock", "vsock", "The vsock device could not be added to the VM")

    def h_vm_add_device(self, body):
        return self.add_device(body, "devices", "vfio", "The device could not be added to the VM")

    def h_vm_add_vdpa(self, body):
        return self.add_device(body, "vdpa", "vdpa", "The vDPA device could not be added to the VM")

    def h_vm_add_user_device(self, body):
        return self.add_device(body, "user_devices", "user", "The user device could not be added to the VM")

    def remove_from_config(self, ident):
        found = False
        for key in ("disks", "net", "fs", "pmem", "devices", "vdpa", "user_devices"):
            items = self.config.get(key)
            if items:
                kept = [d for d in items if d.get("id") != ident]
                found |= len(kept) != len(items)
                self.config[key] = kept
        if self.config.get("vsock") and self.config["vsock"].get("id") == ident:
            self.config["vsock"] = None
            found = True
        return found

    def h_vm_remove_device(self, body):
        head = "The device could not be removed from the VM"
        ident = body.get("id")
        if self.vm is not None:
            node = self.vm.device_tree.get(ident)
            if node is None:
                raise vmm_error(head, "Error from device manager",
                                "Failed to find device corresponding to the given identifier")
            if node.get("parent") is None:
                raise vmm_error(head, "Error from device manager", "Missing PCI device node")
            parent = node["parent"]
            self.vm.device_tree.pop(ident, None)
            self.vm.device_tree.pop(parent, None)
            vsock = self.config.get("vsock")
            if vsock and vsock.get("id") == ident:
                self.release_vsock()
            self.remove_from_config(ident)
            self.event("vm", "device-removed", {"id": ident})
            return 204, None
        if self.config is not None:
            if self.remove_from_config(ident):
                return 204, None
            raise vmm_error(head, f"No device with id {dumps(ident)} to remove")
        raise vmm_error(head, "VM is not created")

    def h_vm_snapshot(self, body):
        head = "The VM could not be snapshotted"
        if self.vm is None:
            raise vmm_error(head, "VM is not running")
        self.event("vm", "snapshotting")
        if self.vm.state != "Paused":
            raise vmm_error(head, "Cannot snapshot VM", "Failed to snapshot migratable component",
                            "Trying to snapshot while VM is running")
        url = body.get("destination_url", "")
        send = ("Cannot send VM snapshot", "Failed to send migratable component snapshot")
        if not url.startswith("file://"):
            raise vmm_error(head, *send, f"Could not extract path from URL: {url}")
        directory = url[len("file://"):]
        if not os.path.isdir(directory):
            raise vmm_error(head, *send, f"Destination is not a directory: {dumps(directory)}")
        state = {"snapshots": {"vm": {"state": {"standin": True, "state": self.vm.state}},
                               "memory-manager": {"requested_hotplug": self.vm.requested_hotplug,
                                                  "current_ram": self.vm.current_ram,
                                                  "boot_ram": self.vm.boot_ram},
                               "device-manager": {"device_tree": self.vm.device_tree}},
                 "guest": self.vm.guest}
        memory = dumps({"standin_memory": True, "guest": self.vm.guest,
                             "size": self.memory_total()}).encode()
        for name, data in (("config.json", dumps(self.config).encode()),
                           ("state.json", dumps(state).encode()),
                           ("memory-ranges", memory)):
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as e:
                raise vmm_error(head, *send, os_error_text(e))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        self.event("vm", "snapshotted")
        return 204, None

    def h_vm_restore(self, body):
        head = "The VM could not restored"
        if self.vm is not None or self.config is not None:
            raise vmm_error(head, "VM is already created")
        url = body["source_url"]
        recv = ("Cannot restore VM", "Failed to receive migratable component snapshot")
        if not url.startswith("file://"):
            raise vmm_error(head, "Cannot restore VM", "Failed to send migratable component snapshot",
                            f"Could not extract path from URL: {url}")
        directory = url[len("file://"):]
        if not os.path.isdir(directory):
            raise vmm_error(head, "Cannot restore VM", "Failed to send migratable component snapshot",
                            f"Destination is not a directory: {dumps(directory)}")
        files = {}
        for name in ("config.json", "state.json", "memory-ranges"):
            try:
                with open(os.path.join(directory, name), "rb") as f:
                    files[name] = f.read()
            except OSError as e:
                raise vmm_error(head, *recv, os_error_text(e))
        try:
            config = json.loads(files["config.json"])
            state = json.loads(files["state.json"])
            memory = json.loads(files["memory-ranges"])
        except ValueError as e:
            raise vmm_error(head, *recv, str(e))
        self.event("vm", "restoring")
        self.config = self.with_defaults(config)
        try:
            self.open_consoles(head)
            vm = self.new_vm(head)
        except APIError:
            self.config = None
            raise
        vm.guest = dict(memory.get("guest") or state.get("guest") or vm.guest)
        vm.guest["restored"] = True
        mm = state.get("snapshots", {}).get("memory-manager", {})
        vm.requested_hotplug = mm.get("requested_hotplug", vm.requested_hotplug)
        vm.current_ram = mm.get("current_ram", vm.current_ram)
        vm.boot_ram = mm.get("boot_ram", vm.boot_ram)
        vm.state = "Paused"
        self.vm = vm
        self.event("vm", "restored")
        return 204, None

    def h_vm_send_migration(self, _):
        raise vmm_error("Error starting migration sender", "Failed to send migratable component snapshot",
                        "migration is not implemented by the stand-in")

    def h_vm_receive_migration(self, _):
        raise vmm_error("Error starting migration receiver", "Failed to receive migratable component snapshot",
                        "migration is not implemented by the stand-in")


# ------------------------------------------------------------------------------------------------
# Server


class Server:
    def __init__(self, spec, vmm, listener, api_path, log_path):
        self.spec = spec
        self.vmm = vmm
        self.listener = listener
        self.api_path = api_path
        self.log_path = log_path
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, "listener")
        self.connections = 0

    def record(self, entry):
        if not self.log_path:
            return
        try:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(dumps(entry) + "\n")
        except OSError as e:
            sys.stderr.write(f"ch-standin: cannot write request log {self.log_path}: {e}\n")

    def dispatch(self, req):
        """Routes one request as handle_http_request does; returns (status, body, violations)."""
        violations = []
        try:
            return self._dispatch(req, violations)
        except APIError as e:
            e.violations = violations
            raise

    def _dispatch(self, req, violations):
        path = req.target.split("?", 1)[0]
        name = path[len(HTTP_ROOT) + 1:] if path.startswith(HTTP_ROOT + "/") else None
        if name not in ROUTES:
            raise APIError(404, ["Not Found"])
        ops = self.spec.ops[name]
        op = ops.get(req.method)
        if op is None:
            violations.append(f"{req.method} {name} is not in the OpenAPI document")
            if req.method == "PATCH" and name not in ("vm.create", "vm.info", "vmm.ping", "vmm.shutdown"):
                raise APIError(400, [], body="")
            raise bad_request()
        body = req.body
        if req.method == "GET":
            if body:
                violations.append(f"GET {name} carried a body")
            return self.call(name, req.method, None) + (violations,)
        if not op["has_body"]:
            if body:
                violations.append(f"PUT {name} takes no body but carried {len(body)} bytes")
                if name in BODYLESS_ACTIONS:
                    raise bad_request()
            return self.call(name, req.method, None) + (violations,)
        if not body:
            violations.append(f"PUT {name} needs a body")
            if name == "vm.create":
                raise APIError(400, [], body="")
            raise bad_request()
        try:
            value = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            violations.append("body is not JSON")
            raise APIError(400, ["Failed to deserialize JSON", str(e)])
        errors = self.spec.errors(op["ref"], value)
        if errors:
            violations.extend(errors)
            raise APIError(400, ["Failed to deserialize JSON", "; ".join(errors)])
        serde = serde_errors(name, value)
        if serde:
            violations.extend(serde)
            raise APIError(400, ["Failed to deserialize JSON", "; ".join(serde)])
        return self.call(name, req.method, value) + (violations,)

    def call(self, name, method, value):
        status, body = self.vmm.handle(name, method, value)
        ref = self.spec.responses.get((name, method, status))
        if ref and body:
            # CH serializes Option::None as null where the v48 document gives no `nullable`.
            errors = self.spec.errors(ref, without_nulls(json.loads(body)))
            if errors:   # a stand-in bug: say so loudly in the log and on stderr
                sys.stderr.write(f"ch-standin: {name} answer does not match {ref}: {errors}\n")
                raise APIError(500, ["Error from API", f"stand-in answer does not match {ref}"])
        return status, body

    def serve_request(self, conn, req):
        conn.requests_seen += 1
        try:
            status, body, violations = self.dispatch(req)
        except APIError as e:
            status, body = e.status, e.body
            violations = getattr(e, "violations", [])
        except Exception as e:  # a stand-in bug: answer like an internal error, keep serving
            status, body = 500, dumps(["Error from API", f"stand-in internal error: {e!r}"])
            violations = [f"stand-in internal error: {e!r}"]
        # Logged before answering, so a client that reads the log after the answer sees the entry.
        self.record({
            "time": time.time(), "pid": os.getpid(), "connection": conn.number,
            "request_on_connection": conn.requests_seen, "method": req.method, "path": req.target,
            "http_version": req.version, "headers": req.headers, "content_length": req.content_length,
            "transfer_encoding": req.transfer_encoding, "expect": req.expect,
            "body": None if req.body is None else req.body.decode("utf-8", "replace"),
            "status": status, "response_body": body if isinstance(body, str) else None,
            "violations": violations,
        })
        payload = render(status, body)
        try:
            conn.sock.sendall(payload)
        except OSError:
            conn.closed = True

    def serve_parse_error(self, conn, err):
        message = dumps(f"{err}\nAll previous unanswered requests will be dropped.")[1:-1]
        body = "{ \"error\": \"" + message + "\" }"
        self.record({"time": time.time(), "pid": os.getpid(), "connection": conn.number,
                     "request_on_connection": conn.requests_seen + 1, "method": None, "path": None,
                     "status": 400, "response_body": body, "violations": [f"HTTP parse error: {err}"]})
        try:
            conn.sock.sendall(render(400, body))
        except OSError:
            pass

    def accept(self):
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        self.connections += 1
        sock.setblocking(True)
        sock.settimeout(10)
        conn = Connection(sock, self.connections)
        self.sel.register(sock, selectors.EVENT_READ, conn)

    def close(self, conn):
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        conn.closed = True

    def readable(self, conn):
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, socket.timeout):
            return
        except OSError:
            data = b""
        if not data:
            self.close(conn)
            return
        conn.buf.extend(data)

        def interim(_req):
            try:
                conn.sock.sendall(render(100))
            except OSError:
                pass
        requests = []
        try:
            conn.parse(interim, requests)
        except ParseError as e:
            # micro_http drops every request parsed in this read and answers the error.
            for dropped in requests:
                self.record({"time": time.time(), "pid": os.getpid(), "connection": conn.number,
                             "method": dropped.method, "path": dropped.target, "headers": dropped.headers,
                             "content_length": dropped.content_length,
                             "transfer_encoding": dropped.transfer_encoding, "body": None, "status": None,
                             "violations": ["request dropped: a parse error followed it in the same read"]})
            self.serve_parse_error(conn, e)
            conn.buf.clear()
            conn.pending = None
            return
        for req in requests:
            self.serve_request(conn, req)
            if self.vmm.exit_code is not None:
                return

    def vsock_accept(self):
        """Hybrid vsock host side: read `CONNECT <port>`, then reach the guest's listener on that
        port. The stand-in's "guest" listeners are Unix sockets `<CH_STANDIN_GUEST_VSOCK>/<port>.sock`
        (a test runs the real guest agent there); without one, CH closes the connection."""
        try:
            s, _ = self.vmm.vsock_listener.accept()
        except OSError:
            return
        guest_dir = os.environ.get("CH_STANDIN_GUEST_VSOCK")
        running = self.vmm.vm is not None and self.vmm.vm.state == "Running"
        threading.Thread(target=vsock_connect, args=(s, guest_dir if running else None), daemon=True).start()

    def run(self):
        vsock_registered = None
        while self.vmm.exit_code is None:
            if vsock_registered is not self.vmm.vsock_listener:
                if vsock_registered is not None:
                    try:
                        self.sel.unregister(vsock_registered)
                    except (KeyError, ValueError):
                        pass
                if self.vmm.vsock_listener is not None:
                    self.sel.register(self.vmm.vsock_listener, selectors.EVENT_READ, "vsock")
                vsock_registered = self.vmm.vsock_listener
            timeout = None
            if self.vmm.timers:
                timeout = max(0.0, min(t for t, _ in self.vmm.timers) - time.monotonic())
            for key, _ in self.sel.select(timeout):
                if key.data == "listener":
                    self.accept()
                elif key.data == "vsock":
                    self.vsock_accept()
                else:
                    self.readable(key.data)
                if self.vmm.exit_code is not None:
                    break
            now = time.monotonic()
            due = [cb for t, cb in self.vmm.timers if t <= now]
            self.vmm.timers = [(t, cb) for t, cb in self.vmm.timers if t > now]
            for cb in due:
                cb()
        return self.vmm.exit_code


def vsock_connect(host, guest_dir):
    """One hybrid-vsock connection: `CONNECT <port>\\n` → `OK <local port>\\n` and a byte relay."""
    host.settimeout(5)
    line = b""
    try:
        while not line.endswith(b"\n") and len(line) < 64:
            chunk = host.recv(1)
            if not chunk:
                break
            line += chunk
    except OSError:
        pass
    m = re.fullmatch(rb"CONNECT (\d+)\n", line)
    guest = None
    if m and guest_dir:
        guest = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            guest.connect(os.path.join(guest_dir, f"{int(m.group(1))}.sock"))
        except OSError:
            guest.close()
            guest = None
    if guest is None:
        host.close()
        return
    host.settimeout(None)
    host.sendall(b"OK 1073741824\n")

    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    t = threading.Thread(target=pump, args=(guest, host), daemon=True)
    t.start()
    pump(host, guest)
    t.join()
    host.close()
    guest.close()


def without_nulls(value):
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def serde_errors(name, value):
    """Deserialization rules serde applies beyond what the OpenAPI schema states."""
    errs = []

    def unsigned(obj, keys, where):
        for k in keys:
            v = obj.get(k) if isinstance(obj, dict) else None
            if isinstance(v, int) and not isinstance(v, bool) and v < 0:
                errs.append(f"{where}.{k}: invalid value: integer `{v}`, expected u64")
    if name == "vm.create":
        mem = value.get("memory") or {}
        unsigned(mem, ("size", "hotplug_size", "hotplugged_size"), "memory")
        hm = mem.get("hotplug_method")
        if hm is not None and hm not in ("Acpi", "VirtioMem"):
            errs.append(f"memory.hotplug_method: unknown variant `{hm}`, expected `Acpi` or `VirtioMem`")
        if "payload" in value and not isinstance(value["payload"], dict):
            errs.append("payload: expected struct PayloadConfig")
    elif name == "vm.resize":
        unsigned(value, ("desired_vcpus", "desired_ram", "desired_balloon"), "VmResizeData")
    elif name == "vm.remove-device":
        if "id" not in value:
            errs.append("missing field `id`")
    elif name == "vm.snapshot":
        if "destination_url" not in value:
            errs.append("missing field `destination_url`")
    return errs


# ------------------------------------------------------------------------------------------------
# Command line


VM_OPTIONS = {"--kernel", "--firmware", "--igvm", "--initramfs", "--cmdline", "--cpus", "--memory",
              "--memory-zone", "--disk", "--net", "--rng", "--serial", "--console", "--vsock", "--fs",
              "--pmem", "--device", "--user-device", "--vdpa", "--balloon", "--numa", "--watchdog",
              "--pvpanic", "--platform", "--tpm", "--restore", "--debug-console", "--rate-limit-group",
              "--pci-segment", "--landlock-rules"}


def usage_error(message):
    sys.stderr.write(f"error: {message}\n\nFor more information, try '--help'.\n")
    sys.exit(2)


def parse_args(argv):
    args = {"verbosity": 0}
    i = 0

    def value(opt):
        nonlocal i
        if "=" in opt and opt.startswith("--"):
            return opt.split("=", 1)[1]
        i += 1
        if i >= len(argv):
            usage_error(f"a value is required for '{opt}' but none was supplied")
        return argv[i]
    while i < len(argv):
        a = argv[i]
        key = a.split("=", 1)[0] if a.startswith("--") else a
        if key in ("-V", "--version"):
            args["version"] = True
        elif key in ("-h", "--help"):
            sys.stdout.write("cloud-hypervisor stand-in: --api-socket <path=PATH|fd=N|PATH> [-v...] "
                             "[--log-file F] [--event-monitor path=F] [--seccomp true|false|log]\n")
            sys.exit(0)
        elif re.fullmatch(r"-v+", a):
            args["verbosity"] += len(a) - 1
        elif key == "--api-socket":
            args["api_socket"] = value(a)
        elif key == "--log-file":
            args["log_file_path"] = value(a)
        elif key == "--event-monitor":
            args["event_monitor_spec"] = value(a)
        elif key == "--seccomp":
            v = value(a)
            if v not in ("true", "false", "log"):
                usage_error(f"invalid value '{v}' for '--seccomp'")
        elif key == "--landlock":
            pass
        elif key in VM_OPTIONS:
            usage_error(f"'{key}' is not implemented by the Cloud Hypervisor stand-in: configure the VM "
                        f"through the API (vm.create / vm.restore)")
        else:
            usage_error(f"unexpected argument '{a}' found")
        i += 1
    return args


def parse_kv(spec):
    out = {}
    for part in spec.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def main(argv):
    os.umask(0o077)
    args = parse_args(argv)
    version = os.environ.get("CH_STANDIN_VERSION", "48.0.0")
    if args.get("version"):
        print(f"cloud-hypervisor v{version.rsplit('.', 1)[0]}-standin")
        return 0
    if "log_file_path" in args:
        args["log_file"] = open(args["log_file_path"], "w", encoding="utf-8")
    if "event_monitor_spec" in args:
        kv = parse_kv(args["event_monitor_spec"])
        if "fd" in kv:
            args["event_monitor"] = os.fdopen(int(kv["fd"]), "w")
        else:
            args["event_monitor"] = open(kv.get("path", args["event_monitor_spec"]), "w", encoding="utf-8")
    spec_path = os.environ.get("CH_API_SPEC") or str(default_spec_path())
    try:
        spec = Spec(spec_path)
    except OSError as e:
        sys.stderr.write(f"ch-standin: cannot read the OpenAPI document {spec_path}: {e} "
                         f"(set CH_API_SPEC)\n")
        return 1
    api = args.get("api_socket")
    if not api:
        usage_error("the stand-in needs --api-socket")
    kv = parse_kv(api)
    api_path = None
    if "fd" in kv:
        listener = socket.socket(fileno=int(kv["fd"]))
    else:
        api_path = kv.get("path", api)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(api_path)
        except OSError as e:
            sys.stderr.write("Error: Cloud Hypervisor exited with the following chain of errors:\n"
                             "  0: Failed to start the VMM thread\n"
                             "  1: Error binding to UNIX socket\n"
                             f"  2: {os_error_text(e)}\n")
            return 1
        listener.listen(64)
    listener.setblocking(False)

    vmm = VMM(spec, args)
    server = Server(spec, vmm, listener, api_path, os.environ.get("CH_STANDIN_LOG"))

    def on_signal(signum, _frame):
        raise Terminate(signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    vmm.log(1, f"API server listening on {api_path or api}")
    code = 0
    try:
        code = server.run()
    except Terminate:
        try:
            vmm.delete_vm()
        except APIError:
            vmm.release_vsock()
        vmm.event("vmm", "shutdown")
        code = 0
    finally:
        listener.close()
        if api_path:
            try:
                os.unlink(api_path)
            except OSError:
                pass
        vmm.release_vsock()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
