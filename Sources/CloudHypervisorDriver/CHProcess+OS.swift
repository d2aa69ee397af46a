import Foundation
import VMM
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What is at a Unix socket path.
enum SocketProbe: Equatable {
    case absent, accepting, stale, notSocket

    /// `sizeof(sockaddr_un.sun_path)` on Linux, terminator included.
    static let maxPathBytes = 108

    static func probe(_ path: String) -> SocketProbe {
        var st = stat()
        guard lstat(path, &st) == 0 else { return .absent }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else { return .notSocket }
        return connects(path) ? .accepting : .stale
    }

    /// True when a stream connection to `path` succeeds (closed again at once).
    static func connects(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < maxPathBytes else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) }
        }
        return rc == 0
    }
}

/// posix_spawn with a new session, default signal handling, an empty signal mask, stdin from
/// /dev/null, stdout/stderr to `outputFD`, and every other descriptor closed.
enum Spawner {
    /// glibc's `POSIX_SPAWN_SETSID` (spawn.h, only declared under `_GNU_SOURCE`, which Swift's
    /// Glibc module does not define). The value is part of glibc's ABI since 2.26.
    static let setsidFlag: Int32 = 0x80

    static func spawn(path: String, argv: [String], envp: [String], outputFD: Int32) throws(VMMError) -> Int32 {
        guard access(path, X_OK) == 0 else {
            throw .process("\(path) is not executable: \(String(cString: strerror(errno)))")
        }
        var attr = posix_spawnattr_t()
        var actions = posix_spawn_file_actions_t()
        posix_spawnattr_init(&attr)
        posix_spawn_file_actions_init(&actions)
        defer {
            posix_spawnattr_destroy(&attr)
            posix_spawn_file_actions_destroy(&actions)
        }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &all)
        let flags = Int32(POSIX_SPAWN_SETSIGMASK) | Int32(POSIX_SPAWN_SETSIGDEF) | setsidFlag
        var rc = posix_spawnattr_setflags(&attr, Int16(truncatingIfNeeded: flags))
        guard rc == 0 else { throw .process("posix_spawnattr_setflags: \(String(cString: strerror(rc)))") }

        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 1)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 2)
        // Close everything else the daemon has open (glibc ignores close actions on descriptors
        // closed in the meantime, so listing /proc/self/fd first is safe).
        for fd in openDescriptors() where fd > 2 {
            posix_spawn_file_actions_addclose(&actions, fd)
        }

        var pid: pid_t = 0
        rc = withCStrings(argv) { cargv in
            withCStrings(envp) { cenvp in
                posix_spawn(&pid, path, &actions, &attr, cargv, cenvp)
            }
        }
        guard rc == 0 else { throw .process("cannot start \(path): \(String(cString: strerror(rc)))") }
        return pid
    }

    static func openDescriptors() -> [Int32] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return [] }
        return names.compactMap { Int32($0) }.sorted()
    }

    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for p in pointers { free(p) } }
        return body(pointers)
    }
}

