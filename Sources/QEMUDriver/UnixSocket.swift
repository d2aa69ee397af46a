import Glibc
import VMM

/// A connected `AF_UNIX` stream socket with deadline-bounded reads and writes (poll). Owns its fd;
/// not thread-safe by itself (QMPClient serialises access with its lock).
final class UnixSocket {
    private(set) var fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit { close() }

    /// Largest usable `sun_path` (108 bytes including the terminating NUL).
    static let maxPathBytes = 107

    /// Connects to `path`. Unix-socket connects do not block on a live listener: they succeed or
    /// fail at once (ENOENT before QEMU binds, ECONNREFUSED after it exits).
    static func connect(path: String) throws(VMMError) -> UnixSocket {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= maxPathBytes else {
            throw .transport("socket path \(path) is \(bytes.count) bytes; the limit is \(maxPathBytes): use a shorter run directory")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .transport("socket(AF_UNIX): \(errnoText())") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
                retryEINTR { Glibc.connect(fd, sp, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        guard rc == 0 else {
            let text = errnoText()
            _ = Glibc.close(fd)
            throw .transport("connect(\(path)): \(text)")
        }
        return UnixSocket(fd: fd)
    }

    /// Writes all of `bytes` before `deadline` (a `Clock` instant).
    func writeAll(_ bytes: [UInt8], deadline: ContinuousClock.Instant) throws(VMMError) {
        var off = 0
        while off < bytes.count {
            try waitReady(events: Int16(POLLOUT), deadline: deadline, what: "write")
            let n = bytes.withUnsafeBytes { raw in
                retryEINTR { Glibc.send(fd, raw.baseAddress.map { $0 + off }, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { continue }
                throw .transport("send: \(errnoText())")
            }
            off += n
        }
    }

    /// Sends `bytes` in one `sendmsg` with `fd` attached as `SCM_RIGHTS` (QMP `getfd` takes the fd
    /// that arrives with the command).
    func sendWithFD(_ bytes: [UInt8], fd passed: Int32, deadline: ContinuousClock.Instant) throws(VMMError) {
        try waitReady(events: Int16(POLLOUT), deadline: deadline, what: "write")
        // cmsghdr is {size_t len; int level; int type;} then the payload, 8-byte aligned on x86_64.
        let headerSize = MemoryLayout<cmsghdr>.size
        let space = headerSize + 8
        var control = [UInt8](repeating: 0, count: space)
        control.withUnsafeMutableBytes { raw in
            var h = cmsghdr()
            h.cmsg_len = headerSize + MemoryLayout<Int32>.size
            h.cmsg_level = SOL_SOCKET
            h.cmsg_type = Int32(SCM_RIGHTS)
            raw.storeBytes(of: h, toByteOffset: 0, as: cmsghdr.self)
            raw.storeBytes(of: passed, toByteOffset: headerSize, as: Int32.self)
        }
        var payload = bytes
        let n = payload.withUnsafeMutableBytes { data -> Int in
            control.withUnsafeMutableBytes { ctl -> Int in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &iov) { iovp -> Int in
                    var msg = msghdr()
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = ctl.baseAddress
                    msg.msg_controllen = ctl.count
                    return retryEINTR { sendmsg(fd, &msg, Int32(MSG_NOSIGNAL)) }
                }
            }
        }
        if n < 0 { throw .transport("sendmsg(SCM_RIGHTS): \(errnoText())") }
        if n < bytes.count { try writeAll(Array(bytes[n...]), deadline: deadline) }
    }

    /// Reads what is available (at least one byte) before `deadline`; an empty result means the
    /// peer closed the connection.
    func readSome(deadline: ContinuousClock.Instant, max: Int = 65536) throws(VMMError) -> [UInt8] {
        try waitReady(events: Int16(POLLIN), deadline: deadline, what: "read")
        var buf = [UInt8](repeating: 0, count: max)
        let n = buf.withUnsafeMutableBytes { raw in retryEINTR { Glibc.recv(fd, raw.baseAddress, max, 0) } }
        if n < 0 { throw .transport("recv: \(errnoText())") }
        return Array(buf[0..<n])
    }

    func close() {
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
    }

    private func waitReady(events: Int16, deadline: ContinuousClock.Instant, what: String) throws(VMMError) {
        guard fd >= 0 else { throw .transport("\(what) on a closed socket") }
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            if left <= .zero { throw .timeout("QMP \(what)") }
            let ms = Int32(min(left.milliseconds + 1, 60_000))
            var p = pollfd(fd: fd, events: events, revents: 0)
            let rc = Glibc.poll(&p, 1, ms)
            if rc < 0 {
                if errno == EINTR { continue }
                throw .transport("poll: \(errnoText())")
            }
            if rc == 0 { continue }
            // POLLHUP/POLLERR: let the read/write report EOF or the error.
            return
        }
    }
}

/// Retries a syscall returning -1/EINTR.
@inline(__always)
func retryEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
    while true {
        let r = body()
        if r == -1 && errno == EINTR { continue }
        return r
    }
}

func errnoText(_ code: Int32 = errno) -> String {
    "\(String(cString: strerror(code))) (errno \(code))"
}

extension Duration {
    /// Whole milliseconds, rounded down (negative durations give negative values).
    var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }

    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
