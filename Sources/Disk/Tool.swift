import Foundation

/// Runs an external tool with its stdout and stderr captured together (C locale, so messages are stable).
enum Tool {
    static let searchDirs = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]

    static func find(_ name: String, package: String) throws(DiskError) -> String {
        var dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        dirs += searchDirs
        for d in dirs where !d.isEmpty {
            let p = d + "/" + name
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw .toolMissing(tool: name, package: package)
    }

    struct Result { var status: Int32; var output: String }

    static func run(_ path: String, _ args: [String]) throws(DiskError) -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["LC_ALL"] = "C"
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch {
            throw .io("cannot start \(path): \(error.localizedDescription)")
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }
}
