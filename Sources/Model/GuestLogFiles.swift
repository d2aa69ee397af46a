/// The log sources of an instance (`logs?source=`), each one file in the instance's log directory.
public enum GuestLogSource: String, Sendable, CaseIterable {
    /// The guest's serial console, written by the VMM.
    case app
    /// The VMM process's own stdout/stderr, written by the VMM.
    case vmm
    /// Operation lines the Provisioner appends itself.
    case hypeman

    /// Whether the VMM (not the Provisioner) writes this file, so rotation must happen beside a
    /// writer that keeps its descriptor open.
    public var writtenByVMM: Bool { self != .hypeman }
}

/// Where an instance's guest logs live and what the rotated files are called: one place, used
/// by the API (tail, follow) and the Provisioner (VM specs, rotation).
///
/// Per source there is the live file `<source>.log` and the rotated ones `<source>.log.1` (the
/// newest) … `<source>.log.<LOG_FILES-1>` (the oldest).
public enum GuestLogFiles {
    /// The log directory inside an instance directory.
    public static func directory(instanceDir: String) -> String { instanceDir + "/logs" }

    /// The live file of `source` in the log directory `dir`.
    public static func live(_ source: GuestLogSource, in dir: String) -> String { "\(dir)/\(source.rawValue).log" }

    /// The `k`-th rotated file (1 is the newest) of `source` in `dir`; `k == 0` is the live file.
    public static func rotated(_ source: GuestLogSource, _ k: Int, in dir: String) -> String {
        k == 0 ? live(source, in: dir) : "\(dir)/\(source.rawValue).log.\(k)"
    }

    /// The most rotated files any configuration keeps (the readers look no further).
    public static let maxRotated = 15
}

/// How large guest logs may grow: `LOG_MAX_BYTES` per file (default 64 MiB) and `LOG_FILES`
/// files per source (default 2: the live file and one rotated).
public struct GuestLogLimits: Sendable, Equatable {
    /// The cap on each file, live or rotated.
    public var maxBytes: Int64
    /// Files kept per source, the live one included (1 … `GuestLogFiles.maxRotated + 1`).
    public var files: Int

    public static let defaultMaxBytes: Int64 = 64 * Size.MiB
    public static let defaultFiles = 2
    /// The smallest cap accepted: below it a single console burst would rotate constantly.
    public static let minMaxBytes: Int64 = 16 * Size.KiB

    public init(maxBytes: Int64 = GuestLogLimits.defaultMaxBytes, files: Int = GuestLogLimits.defaultFiles) {
        self.maxBytes = maxBytes
        self.files = files
    }

    /// Parses the two settings (nil = unset = the default). `LOG_MAX_BYTES` takes a size
    /// (`"64MB"`, `"262144"`). Throws with a message naming the bad setting.
    public static func parse(maxBytes: String?, files: String?) throws(APIError) -> GuestLogLimits {
        var l = GuestLogLimits()
        if let t = maxBytes, !t.isEmpty {
            guard let v = Size.parse(t), v >= minMaxBytes else {
                throw APIError(.invalidRequest, "LOG_MAX_BYTES must be a size of at least \(minMaxBytes) bytes, got \"\(t)\"")
            }
            l.maxBytes = v
        }
        if let t = files, !t.isEmpty {
            guard let v = Int(t), v >= 1, v <= GuestLogFiles.maxRotated + 1 else {
                throw APIError(.invalidRequest, "LOG_FILES must be an integer from 1 to \(GuestLogFiles.maxRotated + 1), got \"\(t)\"")
            }
            l.files = v
        }
        return l
    }

    /// The size at which a file written by the VMM is rotated: half the cap, the other half is
    /// headroom for what a flooding guest writes between two checks of the watcher (a thread
    /// that may wait for a CPU on a busy host). A rotated file thus holds at least half the cap.
    public var rotateAt: Int64 { maxBytes / 2 }

    /// The most bytes all files of one source hold together.
    public var totalBytes: Int64 { maxBytes * Int64(files) }
}
