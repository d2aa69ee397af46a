import Foundation

/// Test helpers: temp dirs and running host tools.
enum TestSupport {
    static func tempDir(_ tag: String) throws -> String {
        let base = FileManager.default.temporaryDirectory.path + "/guestboot-\(tag)-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        return base
    }

    static func which(_ name: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    struct Result {
        var status: Int32
        var output: String
    }

    /// Runs a command with stdin from `input` (or /dev/null); stdout+stderr together.
    @discardableResult
    static func run(_ exe: String, _ args: [String], input: [UInt8]? = nil, cwd: String? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        var inPipe: Pipe?
        if input != nil { inPipe = Pipe(); p.standardInput = inPipe } else { p.standardInput = FileHandle.nullDevice }
        try p.run()
        if let inPipe, let input {
            // Feed stdin on another thread so a large input cannot deadlock against stdout.
            let handle = inPipe.fileHandleForWriting
            let data = Data(input)
            let t = Thread { handle.write(data); try? handle.close() }
            t.start()
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }

    static func write(_ text: String, to path: String, mode: Int = 0o644) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
            throw CocoaError(.fileWriteUnknown)
        }
    }
}
