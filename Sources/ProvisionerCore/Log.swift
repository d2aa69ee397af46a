import Foundation
import Model

/// One-line structured log records to stderr (journald-friendly), with `key=value` metadata.
public struct Log: Sendable {
    public let label: String
    public init(_ label: String) { self.label = label }

    public func info(_ msg: String, _ meta: [String: String] = [:]) { emit("info", msg, meta) }
    public func warning(_ msg: String, _ meta: [String: String] = [:]) { emit("warning", msg, meta) }
    public func error(_ msg: String, _ meta: [String: String] = [:]) { emit("error", msg, meta) }

    func emit(_ level: String, _ msg: String, _ meta: [String: String]) {
        var line = "\(Timestamp.now()) \(level) \(label): \(msg)"
        for k in meta.keys.sorted() { line += " \(k)=\(meta[k]!)" }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

/// Appends operation lines to an instance's own `hypeman.log` (contract §2.10), capped at
/// `LOG_MAX_BYTES`: a line that would pass the cap first rotates the file (`hypeman.log.1`…).
public enum InstanceLog {
    /// The limits from the environment (`LOG_MAX_BYTES`, `LOG_FILES`), read once.
    public static let limits: GuestLogLimits = GuestLogLimits.fromEnvironment()
    static let lock = NSLock()

    public static func append(dataDir: String, instanceID: String, level: String = "INFO", _ msg: String) {
        append(dir: GuestLogFiles.directory(instanceDir: "\(dataDir)/guests/\(instanceID)"), level: level, msg, limits: limits)
    }

    /// Appends one line to `hypeman.log` in the log directory `dir`, rotating first when the
    /// line would take the file past `limits.maxBytes` (a longer line is cut to fit).
    public static func append(dir: String, level: String = "INFO", _ msg: String, limits: GuestLogLimits) {
        guard FileManager.default.fileExists(atPath: dir) else { return }
        var line = Array("\(Timestamp.now()) \(level) \(msg)\n".utf8)
        if Int64(line.count) > limits.maxBytes { line = Array(line.prefix(Int(limits.maxBytes) - 1)) + [10] }
        let path = GuestLogFiles.live(.hypeman, in: dir)
        lock.lock(); defer { lock.unlock() }
        if let size = LogRotation.size(path), size + Int64(line.count) > limits.maxBytes {
            LogRotation.renameLive(.hypeman, in: dir, files: limits.files)
        }
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
    }
}

extension GuestLogLimits {
    /// `LOG_MAX_BYTES` and `LOG_FILES` from the process environment; an invalid value is reported
    /// on stderr and the default is used.
    public static func fromEnvironment() -> GuestLogLimits {
        let env = ProcessInfo.processInfo.environment
        do { return try parse(maxBytes: env["LOG_MAX_BYTES"], files: env["LOG_FILES"]) } catch {
            Log("prov.logs").error("invalid guest log settings, using the defaults", ["error": error.message])
            return GuestLogLimits()
        }
    }
}
