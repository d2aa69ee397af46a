import Glibc

/// A listening stream socket (vsock or Unix); each accepted connection becomes a `Link`.
final class Listener {
    let fd: Int32
    /// For logs: "vsock port 1024" or "unix /path".
    let name: String

    private init(fd: Int32, name: String) { self.fd = fd; self.name = name }

    /// Listens on AF_VSOCK, any CID, `port`. Nil (logged) when the guest has no vsock.
    static func vsock(port: UInt32) -> Listener? {
        let fd = socket(VsockAddress.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            log("no vsock in this guest (\(errnoText(errno))); not listening on vsock port \(port)")
            return nil
        }
        let address = VsockAddress.bytes(port: port, cid: VsockAddress.anyCID)
        let rc = address.withUnsafeBytes { raw in
            bind(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
        }
        guard rc == 0, listen(fd, 16) == 0 else {
            log("cannot listen on vsock port \(port): \(errnoText(errno))")
            close(fd)
            return nil
        }
        makeNonBlockingCloseOnExec(fd)
        return Listener(fd: fd, name: "vsock port \(port)")
    }

    /// Listens on a Unix stream socket at `path` (an old socket file there is replaced).
    static func unix(path: String) throws(PosixError) -> Listener {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw PosixError(ENAMETOOLONG, "listen on \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw PosixError(errno, "socket for \(path)") }
        unlink(path)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0, listen(fd, 16) == 0 else {
            let e = PosixError(errno, "listen on \(path)")
            close(fd)
            throw e
        }
        makeNonBlockingCloseOnExec(fd)
        return Listener(fd: fd, name: "unix \(path)")
    }

    /// The next pending connection (non-blocking, close-on-exec), nil when none is waiting.
    func accept() -> Int32? {
        while true {
            let fd = Glibc.accept(self.fd, nil, nil)
            if fd >= 0 { makeNonBlockingCloseOnExec(fd); return fd }
            if errno == EINTR || errno == ECONNABORTED { continue }
            if errno != EAGAIN { log("accept on \(name) failed: \(errnoText(errno))") }
            return nil
        }
    }
}

/// `struct sockaddr_vm` (linux/vm_sockets.h is not in the Glibc module): u16 family, u16
/// reserved, u32 port, u32 cid, u8 flags, 3 zero bytes, all in host byte order.
enum VsockAddress {
    static let family: Int32 = 40   // AF_VSOCK
    static let anyCID: UInt32 = 0xFFFF_FFFF

    static func bytes(port: UInt32, cid: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt16(family)) { out += $0 }
        withUnsafeBytes(of: UInt16(0)) { out += $0 }
        withUnsafeBytes(of: port) { out += $0 }
        withUnsafeBytes(of: cid) { out += $0 }
        out += [0, 0, 0, 0]
        return out
    }
}
