import Foundation
import Glibc
import Synchronization
@testable import QEMUDriver

/// An in-test QMP peer on a Unix socket: sends a greeting, then answers each command line with
/// the lines its handler returns (replies, events, stale replies). Records every command and
/// receives descriptors passed with SCM_RIGHTS. One connection, then it stops.
final class FakeQMPServer: Sendable {
    struct Request: Sendable {
        var command: String
        var id: QMPJSON?
        var arguments: QMPJSON?
        /// A descriptor that arrived with this command (the server owns it).
        var fd: Int32?
    }
    /// What to do with one request: write these lines, then close the connection if `close`.
    struct Answer: Sendable {
        var lines: [String]
        var close = false
    }

    let path: String
    private let listenFD: Int32
    private let handler: @Sendable (Request) -> Answer
    private let recorded = Mutex<[String]>([])
    private let finished = Mutex(false)

    static let greeting = #"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}"#

    init(path: String, handler: @escaping @Sendable (Request) -> Answer) throws {
        self.path = path
        self.handler = handler
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0, listen(fd, 4) == 0 else { close(fd); throw POSIXError(.EADDRINUSE) }
        listenFD = fd
        let t = Thread { [self] in self.serve() }
        t.start()
    }

    /// Commands received so far, in order.
    var commands: [String] { recorded.withLock { $0 } }
    var isFinished: Bool { finished.withLock { $0 } }

    /// Standard reply to `request`.
    static func reply(_ request: Request, _ value: String = "{}") -> String {
        #"{"return": \#(value), "id": \#(request.id?.jsonText ?? "null")}"#
    }

    static func event(_ name: String, data: String = "{}") -> String {
        #"{"timestamp": {"seconds": 1795930000, "microseconds": 250000}, "event": "\#(name)", "data": \#(data)}"#
    }

    private func serve() {
        defer {
            close(listenFD)
            finished.withLock { $0 = true }
        }
        let conn = accept(listenFD, nil, nil)
        guard conn >= 0 else { return }
        defer { close(conn) }
        guard send(conn, FakeQMPServer.greeting + "\r\n") else { return }
        var buffer: [UInt8] = []
        var pendingFD: Int32?
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = Array(buffer[..<nl])
                buffer.removeSubrange(...nl)
                guard let msg = try? QMPJSON.parse(line), let cmd = msg["execute"]?.stringValue else {
                    _ = send(conn, #"{"error": {"class": "GenericError", "desc": "JSON parse error"}}"# + "\r\n")
                    continue
                }
                recorded.withLock { $0.append(cmd) }
                let req = Request(command: cmd, id: msg["id"], arguments: msg["arguments"], fd: pendingFD)
                pendingFD = nil
                let answer = handler(req)
                for l in answer.lines { guard send(conn, l + "\r\n") else { return } }
                if answer.close { return }
                continue
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            var control = [UInt8](repeating: 0, count: 64)
            let n = chunk.withUnsafeMutableBytes { data -> Int in
                control.withUnsafeMutableBytes { ctl -> Int in
                    var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                    return withUnsafeMutablePointer(to: &iov) { iovp -> Int in
                        var msg = msghdr()
                        msg.msg_iov = iovp
                        msg.msg_iovlen = 1
                        msg.msg_control = ctl.baseAddress
                        msg.msg_controllen = ctl.count
                        let r = recvmsg(conn, &msg, 0)
                        if r > 0 && msg.msg_controllen >= MemoryLayout<cmsghdr>.size {
                            let h = ctl.load(as: cmsghdr.self)
                            if h.cmsg_level == SOL_SOCKET && h.cmsg_type == Int32(SCM_RIGHTS) {
                                pendingFD = ctl.load(fromByteOffset: MemoryLayout<cmsghdr>.size, as: Int32.self)
                            }
                        }
                        return r
                    }
                }
            }
            if n <= 0 { return }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    private func send(_ fd: Int32, _ text: String) -> Bool {
        let bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }
}
