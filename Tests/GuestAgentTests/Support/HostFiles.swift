import Glibc

/// A fresh directory under /tmp, removed (after unmounting anything left below it) by `remove()`.
final class TempDirectory {
    let path: String

    init(_ label: String) throws {
        var template = Array("/tmp/agent-test-\(label)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw AgentTestError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        path = String(cString: made)
    }

    /// Unmounts whatever is still mounted below the directory (deepest first), then deletes it
    /// (kept, with the agent's log, when AGENT_TEST_KEEP is set: for debugging a failure).
    func remove() {
        let mounted = HostMounts.mountPoints().filter { $0.hasPrefix(path + "/") }.sorted { $0.count > $1.count }
        for mountPoint in mounted { _ = umount2(mountPoint, Int32(MNT_DETACH)) }
        if getenv("AGENT_TEST_KEEP") != nil { return }
        _ = HostCommand.run("/bin/rm", ["-rf", "--one-file-system", path])
    }

    func write(_ relative: String, _ text: String, mode: mode_t = 0o644) throws {
        try writeBytes(relative, Array(text.utf8), mode: mode)
    }

    func writeBytes(_ relative: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
        let file = "\(path)/\(relative)"
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw AgentTestError("cannot create \(file): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        _ = fchmod(fd, mode)
    }

    func makeDirectory(_ relative: String) throws {
        var current = path
        for part in relative.split(separator: "/") {
            current += "/\(part)"
            guard mkdir(current, 0o755) == 0 || errno == EEXIST else {
                throw AgentTestError("mkdir \(current): \(String(cString: strerror(errno)))")
            }
        }
    }

    func symlink(_ relative: String, to target: String) throws {
        guard Glibc.symlink(target, "\(path)/\(relative)") == 0 else {
            throw AgentTestError("symlink \(relative): \(String(cString: strerror(errno)))")
        }
    }

    func read(_ relative: String) -> String? { readText("\(path)/\(relative)") }

    func exists(_ relative: String) -> Bool { access("\(path)/\(relative)", F_OK) == 0 }
}

/// A whole (small) file as text, nil if it cannot be opened.
func readText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { break }
        out += chunk[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

/// Mount points of the test's (and the agent's) mount namespace.
enum HostMounts {
    static func mountPoints() -> [String] {
        (readText("/proc/self/mountinfo") ?? "").split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            return fields.count > 4 ? unescape(fields[4]) : nil
        }
    }

    static func isMountPoint(_ path: String) -> Bool { mountPoints().contains(path) }

    /// The fs type of the topmost mount at `path`.
    static func fsType(at path: String) -> String? {
        for line in (readText("/proc/self/mountinfo") ?? "").split(separator: "\n").reversed() {
            let fields = line.split(separator: " ")
            guard fields.count > 4, unescape(fields[4]) == path, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
            return String(fields[dash + 1])
        }
        return nil
    }

    private static func unescape(_ s: Substring) -> String { s.replacingOccurrences(of: "\\040", with: " ") }
}

extension Substring {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        String(self).split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
