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

/// Appends operation lines to an instance's own `hypeman.log` (contract §2.10).
public enum InstanceLog {
    public static func append(dataDir: String, instanceID: String, level: String = "INFO", _ msg: String) {
        let dir = "\(dataDir)/guests/\(instanceID)/logs"
        guard FileManager.default.fileExists(atPath: dir) else { return }
        let line = "\(Timestamp.now()) \(level) \(msg)\n"
        guard let fh = FileHandle(forWritingAtPath: dir + "/hypeman.log") ?? {
            FileManager.default.createFile(atPath: dir + "/hypeman.log", contents: nil)
            return FileHandle(forWritingAtPath: dir + "/hypeman.log")
        }() else { return }
        defer { try? fh.close() }
        fh.seekToEndOfFile()
        fh.write(Data(line.utf8))
    }
}
