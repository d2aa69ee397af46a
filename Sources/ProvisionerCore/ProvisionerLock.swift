import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The exclusive lock one Provisioner holds on its data directory for its whole life: `flock` on
/// `DATA_DIR/provisioner.lock`, opened `O_CLOEXEC` so VMM children never inherit it. The file
/// holds the owner's pid, so a second Provisioner can say who is running.
public final class ProvisionerLock {
    public let path: String
    private let fd: Int32

    /// Why the lock could not be taken.
    public enum Failure: Error, CustomStringConvertible, Equatable {
        /// Another process holds it; its pid as written in the file (nil if unreadable).
        case held(path: String, pid: Int32?)
        case io(String)

        public var description: String {
            switch self {
            case .held(let path, let pid):
                return "another Provisioner (pid \(pid.map(String.init) ?? "unknown")) holds \(path); only one may run on a data directory"
            case .io(let m): return m
            }
        }
    }

    /// Takes the lock without waiting, or throws `.held` naming the holder's pid.
    public init(path: String) throws(Failure) {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw .io("cannot open \(path): \(String(cString: strerror(errno)))") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            let pid = Self.readPID(fd)
            close(fd)
            if e == EWOULDBLOCK { throw .held(path: path, pid: pid) }
            throw .io("cannot lock \(path): \(String(cString: strerror(e)))")
        }
        // Ours: record our pid for whoever comes next.
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        self.fd = fd
    }

    deinit {
        _ = flock(fd, LOCK_UN)
        close(fd)
    }

    static func readPID(_ fd: Int32) -> Int32? {
        var buf = [UInt8](repeating: 0, count: 32)
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        let s = String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return Int32(s)
    }
}
