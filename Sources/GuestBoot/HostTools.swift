import Foundation

/// Finding and running host tools (gzip, mkfs.ext4). Internal: callers see `GuestBootError`.
enum HostTools {
    /// Directories searched after `$PATH`, because daemons often run with a short PATH and
    /// mkfs.ext4 lives in /usr/sbin or /sbin.
    static let extraDirectories = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    static func find(_ name: String) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        for dir in path.split(separator: ":").map(String.init) + extraDirectories where !dir.isEmpty {
            let candidate = dir + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    static func require(_ name: String, package: String) throws -> String {
        guard let p = find(name) else {
            throw GuestBootError.toolMissing("\(name) not found in PATH or /usr/sbin:/sbin (install the Debian package \(package))")
        }
        return p
    }

    /// Runs `executable args`, stdin from /dev/null, stdout+stderr captured (they are small for
    /// the tools used here). Throws `commandFailed` on a non-zero exit.
    @discardableResult
    static func run(_ executable: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        p.standardInput = FileHandle.nullDevice
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        do { try p.run() } catch {
            throw GuestBootError.commandFailed(command: executable, status: -1, output: "\(error)")
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard p.terminationReason == .exit, p.terminationStatus == 0 else {
            let cmd = ([executable] + args).joined(separator: " ")
            throw GuestBootError.commandFailed(command: cmd, status: p.terminationStatus, output: text)
        }
        return text
    }
}

/// Small file helpers with errors mapped to `GuestBootError.io`.
enum Files {
    static func read(_ path: String) throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: path) else {
            throw GuestBootError.io("cannot read \(path)")
        }
        return [UInt8](d)
    }

    static func readText(_ path: String) throws -> String {
        String(decoding: try read(path), as: UTF8.self)
    }

    /// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
    static func writeAtomically(_ bytes: [UInt8], to path: String, mode: Int = 0o644) throws {
        let tmp = path + ".tmp-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0 ... .max))"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(bytes), attributes: [.posixPermissions: mode]) else {
            throw GuestBootError.io("cannot write \(tmp)")
        }
        try rename(tmp, path)
    }

    static func rename(_ from: String, _ to: String) throws {
        if Foundation.rename(from, to) != 0 {
            let e = errno
            try? FileManager.default.removeItem(atPath: from)
            throw GuestBootError.io("cannot rename \(from) to \(to): \(String(cString: strerror(e)))")
        }
    }

    static func makeDirectory(_ path: String) throws {
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw GuestBootError.io("cannot create directory \(path): \(error.localizedDescription)")
        }
    }

    static func isDirectory(_ path: String) -> Bool {
        var dir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &dir) && dir.boolValue
    }

    static func makeTemporaryDirectory(in parent: String, prefix: String) throws -> String {
        try makeDirectory(parent)
        let path = parent + "/" + prefix + "-\(ProcessInfo.processInfo.processIdentifier)-\(UInt64.random(in: 0 ... .max))"
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false,
                                                     attributes: [.posixPermissions: 0o700]) } catch {
            throw GuestBootError.io("cannot create directory \(path): \(error.localizedDescription)")
        }
        return path
    }
}
