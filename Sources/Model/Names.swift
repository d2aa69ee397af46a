/// Validation rules for user-supplied names, env keys and mount paths.
public enum Names {
    /// Instance and ingress names: `^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`, at most 63 characters.
    public static func isValidResourceName(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard !b.isEmpty, b.count <= 63 else { return false }
        func ok(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        guard ok(b.first!), ok(b.last!) else { return false }
        return b.allSatisfy { ok($0) || $0 == 45 }
    }

    /// Env keys: `[A-Za-z_][A-Za-z0-9_]*` (values are never parsed by a shell unquoted).
    public static func isValidEnvKey(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard let f = b.first, f == 95 || (f >= 65 && f <= 90) || (f >= 97 && f <= 122) else { return false }
        return b.count <= 256 && b.allSatisfy { $0 == 95 || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) }
    }

    /// Directories a volume may not be mounted on or under.
    public static let systemDirectories = ["/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root",
                                           "/run", "/sbin", "/sys", "/tmp", "/usr", "/var"]

    /// Cleans an absolute path (`/a//b/./c/../d` → `/a/b/d`); nil when not absolute. Works on the
    /// UTF-8 bytes: a `/` followed by a combining mark or an emoji modifier is still a separator
    /// (as Characters they would fuse into one grapheme and hide the `/`).
    public static func cleanAbsolutePath(_ p: String) -> String? {
        let slash = UInt8(ascii: "/"), dot = UInt8(ascii: ".")
        guard p.utf8.first == slash else { return nil }
        var parts: [ArraySlice<UInt8>] = []
        for comp in Array(p.utf8).split(separator: slash, omittingEmptySubsequences: true) {
            if comp.elementsEqual([dot]) { continue }
            if comp.elementsEqual([dot, dot]) { if !parts.isEmpty { parts.removeLast() }; continue }
            parts.append(comp)
        }
        var out: [UInt8] = [slash]
        for (i, c) in parts.enumerated() {
            if i > 0 { out.append(slash) }
            out.append(contentsOf: c)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Why `path` is not an acceptable volume mount path, or nil when it is.
    public static func mountPathProblem(_ path: String) -> String? {
        guard let clean = cleanAbsolutePath(path) else { return "mount_path \(path) must be an absolute path" }
        if path.utf8.contains(0) || path.utf8.count > 4096 { return "mount_path is not a valid path" }
        let bytes = Array(clean.utf8)
        for dir in systemDirectories {
            let d = Array(dir.utf8)
            let under = dir != "/" && bytes.count > d.count && bytes.starts(with: d) && bytes[d.count] == UInt8(ascii: "/")
            if bytes == d || under {
                return "mount_path \(clean) is a system directory or under one (\(dir))"
            }
        }
        return nil
    }
}
