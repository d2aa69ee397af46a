/// One line of /proc/self/mountinfo.
struct MountEntry {
    var mountPoint: String
    var fsType: String
    var source: String
    var superOptions: String

    /// Values of `key=` / `key+=` in the super options, split on unescaped ":" (overlay layer lists).
    func optionPaths(_ key: String) -> [String] {
        var out: [String] = []
        for option in splitOptions(superOptions) {
            for prefix in ["\(key)=", "\(key)+="] where option.hasPrefix(prefix) {
                out += splitLayers(String(option.dropFirst(prefix.count)))
            }
        }
        return out
    }

    private func splitOptions(_ s: String) -> [String] {
        var parts: [String] = [], current = "", escaped = false
        for c in s {
            if escaped { current.append(c); escaped = false } else if c == "\\" { current.append(c); escaped = true }
            else if c == "," { parts.append(current); current = "" } else { current.append(c) }
        }
        parts.append(current)
        return parts
    }

    private func splitLayers(_ s: String) -> [String] {
        var parts: [String] = [], current = "", escaped = false
        for c in s {
            if escaped { current.append(c); escaped = false } else if c == "\\" { escaped = true }
            else if c == ":" { parts.append(current); current = "" } else { current.append(c) }
        }
        parts.append(current)
        return parts.filter { !$0.isEmpty }
    }
}

/// The mounts of the agent's mount namespace, from /proc/self/mountinfo.
enum MountTable {
    static func read(from path: String = "/proc/self/mountinfo") -> [MountEntry] {
        guard let bytes = readFileBytes(path, limit: 16 << 20) else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap(parse)
    }

    /// The topmost mount at exactly `path`, nil if `path` is not a mount point.
    static func mount(at path: String) -> MountEntry? {
        read().last { $0.mountPoint == path }
    }

    /// `id parent maj:min root mountpoint options [optional fields] - fstype source superoptions`
    static func parse(_ line: Substring) -> MountEntry? {
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count >= 10, let dash = fields.firstIndex(of: "-"), dash >= 6, fields.count >= dash + 4 else { return nil }
        return MountEntry(mountPoint: unescape(fields[4]), fsType: unescape(fields[dash + 1]),
                          source: unescape(fields[dash + 2]), superOptions: unescape(fields[dash + 3]))
    }

    /// Undoes the kernel's octal escapes (`\040` for a space, `\134` for a backslash).
    static func unescape(_ s: Substring) -> String {
        var out: [UInt8] = []
        let bytes = Array(s.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), let value = octal(bytes[(i + 1)..<min(i + 4, bytes.count)]) {
                out.append(value); i += 4
            } else {
                out.append(bytes[i]); i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func octal(_ digits: ArraySlice<UInt8>) -> UInt8? {
        guard digits.count == 3 else { return nil }
        var value = 0
        for d in digits {
            guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "7") else { return nil }
            value = value * 8 + Int(d - UInt8(ascii: "0"))
        }
        return value <= 255 ? UInt8(value) : nil
    }
}
