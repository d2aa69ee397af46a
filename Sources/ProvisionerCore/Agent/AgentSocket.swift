import Foundation
import VMM

/// Opens the byte stream to a guest agent over an `AgentChannel`: a plain Unix-socket connect
/// (QEMU's virtio-serial chardev), or Cloud Hypervisor's hybrid-vsock handshake.
enum AgentSocket {
    struct Failure: Error, CustomStringConvertible { var description: String }

    /// A connected, blocking stream socket; throws while the VMM or the agent is not there yet.
    static func connect(_ channel: AgentChannel, handshakeTimeout: Double = 5) throws -> Int32 {
        switch channel {
        case .unixSocket(let path):
            return try unixConnect(path)
        case .hybridVsock(let path, let port):
            let fd = try unixConnect(path)
            do {
                setReceiveTimeout(fd, seconds: handshakeTimeout)
                try writeAll(fd, Array("CONNECT \(port)\n".utf8))
                let line = try readLine(fd, limit: 64)
                guard line.hasPrefix("OK ") else {
                    throw Failure(description: "hybrid vsock CONNECT \(port) answered '\(line)' (is the guest agent listening?)")
                }
                setReceiveTimeout(fd, seconds: 0)
                return fd
            } catch {
                close(fd)
                throw error
            }
        }
    }

    static func unixConnect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket(): \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw Failure(description: "socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw Failure(description: "connect \(path): \(String(cString: strerror(e)))")
        }
        return fd
    }

    static func setReceiveTimeout(_ fd: Int32, seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "write to the agent link: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    /// Reads one `\n`-terminated line byte by byte (the handshake precedes the framed stream, so
    /// nothing past the newline may be consumed).
    static func readLine(_ fd: Int32, limit: Int) throws -> String {
        var line: [UInt8] = []
        var b: UInt8 = 0
        while line.count < limit {
            let n = read(fd, &b, 1)
            if n == 1 {
                if b == 10 { return String(decoding: line, as: UTF8.self) }
                line.append(b)
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                throw Failure(description: n == 0 ? "hybrid vsock closed during CONNECT (the guest agent is not listening yet)"
                                                  : "hybrid vsock CONNECT: \(String(cString: strerror(errno)))")
            }
        }
        throw Failure(description: "hybrid vsock CONNECT answer too long")
    }
}
