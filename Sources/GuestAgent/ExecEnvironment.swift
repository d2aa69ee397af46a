/// The environment, working directory and executable candidates of an exec session: the app's
/// environment from the env file, overridden by the request's entries.
enum ExecEnvironment {
    /// Used when the env file does not exist (yet).
    static let fallback = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]
    static let fallbackPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// The NUL-separated `KEY=VALUE` list in `file` (read fresh each time), or `fallback`.
    static func base(envFile: String?) -> [String] {
        guard let file = envFile, let bytes = readFileBytes(file) else { return fallback }
        return bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.filter { $0.contains("=") }
    }

    /// `base` with each `KEY=VALUE` of `overrides` replacing the entry for KEY (or appended).
    /// Entries without `=` are ignored.
    static func merge(_ base: [String], _ overrides: [String]) -> [String] {
        var merged = base
        for entry in overrides {
            guard let eq = entry.firstIndex(of: "=") else { continue }
            let key = entry[..<eq]
            if let i = merged.firstIndex(where: { $0.hasPrefix(key + "=") }) { merged[i] = entry } else { merged.append(entry) }
        }
        return merged
    }

    /// The value of `key` in `env`, nil if absent.
    static func value(_ key: String, in env: [String]) -> String? {
        env.first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }

    /// The image's working directory from the workdir file, "/" without one.
    static func workdir(file: String?) -> String {
        guard let file, let line = readTrimmedLine(file), !line.isEmpty else { return "/" }
        return line
    }

    /// Paths to try with execve, in order: argv0 itself when it contains a "/", else argv0 in
    /// each directory of `path` (an empty entry is the current directory, as for execvp).
    static func candidates(for argv0: String, path: String) -> [String] {
        if argv0.contains("/") { return [argv0] }
        return path.split(separator: ":", omittingEmptySubsequences: false).map { dir in
            dir.isEmpty ? argv0 : (dir.hasSuffix("/") ? "\(dir)\(argv0)" : "\(dir)/\(argv0)")
        }
    }
}
