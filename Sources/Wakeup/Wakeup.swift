#if canImport(Glibc)
import Glibc
#endif

/// Cross-process wake-ups over Unix datagram sockets. SQLite holds the facts; a datagram only
/// says "look again". A lost datagram costs at most one fallback poll period.
public final class WakeupReceiver {
    public let path: String
    private let fd: Int32

    public enum Failure: Error, CustomStringConvertible {
        case socket(String)
        public var description: String { if case .socket(let s) = self { return s }; return "" }
    }

    /// Binds a datagram socket at `path` (replacing a stale one), mode 0660 with the socket
    /// group (`SocketAccess.current`; 0600 when there is none).
    public init(path: String) throws(Failure) {
        let access: SocketAccess
        switch SocketAccess.current {
        case .success(let a): access = a
        case .failure(let e): throw .socket(e.description)
        }
        self.path = path
        guard path.utf8.count < 104 else { throw .socket("wake-up socket path \(path) is too long; use a shorter run directory") }
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw .socket("socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        unlink(path)
        let rc = withSockaddr(path) { sa, len in bind(fd, sa, len) }
        guard rc == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw .socket("bind \(path): \(e)")
        }
        // Only root's daemons (workers, Provisioner) use wake-ups: when the group cannot be
        // set the socket stays 0600, which still serves them.
        access.apply(toSocket: path)
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// Waits until a datagram arrives or `timeoutMs` passes; drains pending datagrams.
    /// Returns true when woken by a datagram.
    @discardableResult
    public func wait(timeoutMs: Int32) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let n = poll(&pfd, 1, timeoutMs)
        guard n > 0 else { return false }
        drain()
        return true
    }

    /// Discards queued datagrams (call before checking state, so no wake-up is lost in between).
    public func drain() {
        var buf = [UInt8](repeating: 0, count: 64)
        while recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT)) > 0 {}
    }
}

/// Sends a one-byte datagram to a receiver; errors (no receiver, full queue) are ignored.
public func wake(_ path: String) {
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return }
    defer { close(fd) }
    var b: UInt8 = 1
    _ = withSockaddr(path) { sa, len in sendto(fd, &b, 1, Int32(MSG_DONTWAIT), sa, len) }
}

func withSockaddr<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8.prefix(107))
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
        raw[bytes.count] = 0
    }
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}
