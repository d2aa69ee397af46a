import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Copy-truncate needs the writer to append: after the truncation its next write must land at
/// offset 0. QEMU opens its serial file and its log `O_APPEND`; Cloud Hypervisor opens its serial
/// file without it (it would go on writing at its old offset, leaving a sparse file as large as
/// before). This turns `O_APPEND` on for such a writer's descriptor: `pidfd_getfd` gives us the
/// same open file description, and its status flags are shared with the VMM's descriptor.
public enum AppendMode {
    typealias PidfdOpen = @convention(c) (Int32, UInt32) -> Int32
    typealias PidfdGetfd = @convention(c) (Int32, Int32, UInt32) -> Int32

    /// glibc ≥ 2.36 wrappers, looked up at run time (the Swift Glibc module does not export them).
    static let pidfdOpen: PidfdOpen? = dlsym(nil, "pidfd_open").map { unsafeBitCast($0, to: PidfdOpen.self) }
    static let pidfdGetfd: PidfdGetfd? = dlsym(nil, "pidfd_getfd").map { unsafeBitCast($0, to: PidfdGetfd.self) }

    /// The descriptors of `pid` open on one of `paths`, with their file status flags.
    static func descriptors(pid: Int32, paths: Set<String>) -> [(fd: Int32, flags: Int)] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return [] }
        var out: [(Int32, Int)] = []
        for e in entries {
            guard let fd = Int32(e),
                  let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(e)"),
                  paths.contains(target),
                  let info = FileManager.default.contents(atPath: "/proc/\(pid)/fdinfo/\(e)") else { continue }
            for line in String(decoding: info, as: UTF8.self).split(separator: "\n") where line.hasPrefix("flags:") {
                if let f = Int(line.dropFirst(6).trimmingCharacters(in: .whitespaces), radix: 8) { out.append((fd, f)) }
            }
        }
        return out
    }

    /// Makes every descriptor of process `pid` that is open for writing on one of `paths`
    /// append-only. Returns how many were changed; throws when one could not be.
    @discardableResult
    public static func ensure(pid: Int32, paths: [String]) throws -> Int {
        let resolved = Set(paths.map { p in
            guard let r = realpath(p, nil) else { return p }
            defer { free(r) }
            return String(cString: r)
        })
        let due = descriptors(pid: pid, paths: resolved).filter { $0.flags & Int(O_ACCMODE) != Int(O_RDONLY) && $0.flags & Int(O_APPEND) == 0 }
        guard !due.isEmpty else { return 0 }
        guard let pidfdOpen, let pidfdGetfd else { throw RotationError("pidfd_getfd is not available (glibc < 2.36)") }
        let pidfd = pidfdOpen(pid, 0)
        guard pidfd >= 0 else { throw RotationError("pidfd_open(\(pid)) failed: errno \(errno)") }
        defer { close(pidfd) }
        var n = 0
        for d in due {
            let mine = pidfdGetfd(pidfd, d.fd, 0)
            guard mine >= 0 else { throw RotationError("pidfd_getfd(\(pid), \(d.fd)) failed: errno \(errno)") }
            defer { close(mine) }
            let flags = fcntl(mine, F_GETFL)
            guard flags >= 0, fcntl(mine, F_SETFL, flags | O_APPEND) == 0 else {
                throw RotationError("setting O_APPEND on fd \(d.fd) of \(pid) failed: errno \(errno)")
            }
            n += 1
        }
        return n
    }
}
