"""A minimal FastCGI client (responder role, one request per connection) for tests that talk to
a worker's socket directly, past nginx: to ask one worker, or to send what nginx never would."""
from __future__ import annotations

import socket
import struct


def _record(rtype: int, content: bytes) -> bytes:
    pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBx", 1, rtype, 1, len(content), pad) + content + b"\0" * pad


def _nv(name: bytes, value: bytes) -> bytes:
    def length(n: int) -> bytes:
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return length(len(name)) + length(len(value)) + name + value


def base_params(path: str, method: str = "GET") -> dict:
    """The parameters nginx sends for `method path` (no subject: add HTTP_X_AUTH_SUBJECT to pass one)."""
    return {"REQUEST_METHOD": method, "REQUEST_URI": path, "DOCUMENT_URI": path, "QUERY_STRING": "",
            "CONTENT_LENGTH": "0", "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1"}


def fcgi_raw(sock_path, params: dict, body: bytes = b"", timeout: float = 30) -> bytes:
    """One request; returns the responder's stdout (CGI headers + body) up to END_REQUEST."""
    pairs = b"".join(_nv(k.encode(), v.encode()) for k, v in params.items())
    msg = _record(1, struct.pack(">HB5x", 1, 0)) + _record(4, pairs) + _record(4, b"")
    if body:
        msg += _record(5, body)
    msg += _record(5, b"")
    out, buf = b"", b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(msg)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            buf += chunk
            while len(buf) >= 8:
                _, rtype, _, clen, plen = struct.unpack(">BBHHBx", buf[:8])
                if len(buf) < 8 + clen + plen:
                    break
                content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
                if rtype == 6:
                    out += content
                elif rtype == 3:
                    return out


def fcgi_request(sock_path, params: dict, body: bytes = b"", timeout: float = 30) -> tuple[int, dict, bytes]:
    """One request; returns (status, lower-cased headers, body)."""
    head, _, payload = fcgi_raw(sock_path, params, body, timeout).partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode().split("\r\n"):
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(headers.get("status", "200").split()[0]), headers, payload


def fcgi_get(sock_path, uri: str, timeout: float = 2.0) -> bytes:
    """GET `uri` without a subject; returns the responder's stdout (headers + body)."""
    return fcgi_raw(sock_path, base_params(uri), timeout=timeout)
