import Foundation
import Testing
@testable import ProvisionerCore
import Model

/// Guest-log rotation on plain files: the shift of rotated files, copy-truncate beside a writer
/// that keeps its `O_APPEND` descriptor, `hypeman.log` capped by its own writer, and the watcher
/// keeping a flooded file under the cap.
@Suite(.serialized) struct LogRotationTests {
    static func tempDir() throws -> String {
        let d = "/tmp/logrot-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    static func text(_ path: String) -> String? {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func limitsParse() throws {
        #expect(try GuestLogLimits.parse(maxBytes: nil, files: nil) == GuestLogLimits(maxBytes: 64 << 20, files: 2))
        #expect(try GuestLogLimits.parse(maxBytes: "256KB", files: "3") == GuestLogLimits(maxBytes: 256 << 10, files: 3))
        #expect(throws: APIError.self) { try GuestLogLimits.parse(maxBytes: "1KB", files: nil) }
        #expect(throws: APIError.self) { try GuestLogLimits.parse(maxBytes: "lots", files: nil) }
        #expect(throws: APIError.self) { try GuestLogLimits.parse(maxBytes: nil, files: "0") }
        #expect(throws: APIError.self) { try GuestLogLimits.parse(maxBytes: nil, files: "99") }
    }

    @Test func copyTruncateBesideAnAppendingWriter() throws {
        let d = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let live = GuestLogFiles.live(.app, in: d)
        let w = open(live, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        defer { close(w) }
        func put(_ s: String) { _ = Array(s.utf8).withUnsafeBytes { write(w, $0.baseAddress!, $0.count) } }
        put("one\n")
        #expect(try LogRotation.copyTruncate(.app, in: d, files: 3) == 4)
        put("two\n")
        #expect(try LogRotation.copyTruncate(.app, in: d, files: 3) == 4)
        put("three\n")
        #expect(try LogRotation.copyTruncate(.app, in: d, files: 3) == 6)
        put("four\n")
        // The writer's next line lands at the start of the emptied file; the oldest fell off.
        #expect(Self.text(live) == "four\n")
        #expect(Self.text(GuestLogFiles.rotated(.app, 1, in: d)) == "three\n")
        #expect(Self.text(GuestLogFiles.rotated(.app, 2, in: d)) == "two\n")
        #expect(!FileManager.default.fileExists(atPath: GuestLogFiles.rotated(.app, 3, in: d)))
        // A file found past the cap keeps only its newest bytes.
        put(String(repeating: "z", count: 100) + "END\n")
        _ = try LogRotation.copyTruncate(.app, in: d, files: 2, keepAtMost: 10)
        #expect(Self.text(GuestLogFiles.rotated(.app, 1, in: d)) == "zzzzzzEND\n")
    }

    @Test func hypemanLogStaysUnderItsCap() throws {
        let d = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let limits = GuestLogLimits(maxBytes: 16 * 1024, files: 3)
        for i in 0..<2000 { InstanceLog.append(dir: d, "operation \(i) " + String(repeating: "-", count: 40), limits: limits) }
        InstanceLog.append(dir: d, String(repeating: "L", count: 40_000), limits: limits)   // longer than the cap
        for k in 0..<limits.files {
            let size = LogRotation.size(GuestLogFiles.rotated(.hypeman, k, in: d))
            #expect(size != nil && size! <= limits.maxBytes)
        }
        #expect(!FileManager.default.fileExists(atPath: GuestLogFiles.rotated(.hypeman, 3, in: d)))
        let older = Self.text(GuestLogFiles.rotated(.hypeman, 1, in: d)) ?? ""
        #expect(older.hasSuffix("operation 1999 " + String(repeating: "-", count: 40) + "\n"))
        #expect(Self.text(GuestLogFiles.live(.hypeman, in: d))?.hasSuffix("LLLL\n") == true)
    }

    @Test func watcherKeepsAFloodedFileUnderTheCap() throws {
        let d = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let limits = GuestLogLimits(maxBytes: 256 * 1024, files: 2)
        let watcher = GuestLogWatcher(limits: limits)
        let live = GuestLogFiles.live(.app, in: d)
        let w = open(live, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        defer { close(w) }
        watcher.watch("i1", logDir: d)
        // A writer at about 4 MB/s in 80-byte lines, much faster than a TCG guest's serial port.
        let line = Array((String(repeating: "f", count: 79) + "\n").utf8)
        var maxSeen: Int64 = 0
        let t0 = Date()
        var written = 0
        while Date().timeIntervalSince(t0) < 2 {
            for _ in 0..<50 { _ = line.withUnsafeBytes { write(w, $0.baseAddress!, $0.count) } }
            written += 50 * line.count
            maxSeen = max(maxSeen, LogRotation.size(live) ?? 0, LogRotation.size(GuestLogFiles.rotated(.app, 1, in: d)) ?? 0)
            usleep(1000)
        }
        watcher.unwatch("i1")
        #expect(written > 2 * Int(limits.maxBytes))
        #expect(watcher.rotations >= 2)
        #expect(maxSeen <= limits.maxBytes)
        #expect(FileManager.default.fileExists(atPath: GuestLogFiles.rotated(.app, 1, in: d)))
        #expect(!FileManager.default.fileExists(atPath: GuestLogFiles.rotated(.app, 2, in: d)))
    }

    /// A writer that opened its file without O_APPEND (as Cloud Hypervisor opens its serial
    /// file) is switched to append, so after copy-truncate it writes at the start again.
    @Test func nonAppendingWriterIsSwitchedToAppend() throws {
        let d = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let live = GuestLogFiles.live(.app, in: d)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "exec 3>\"$1\"; i=0; while :; do echo \"line $i\" >&3; i=$((i+1)); sleep 0.005; done", "sh", live]
        try p.run()
        defer { p.terminate(); p.waitUntilExit() }
        while (LogRotation.size(live) ?? 0) < 2000 { usleep(10_000) }
        #expect(AppendMode.descriptors(pid: p.processIdentifier, paths: [live]).first.map { $0.flags & Int(O_APPEND) } == 0)
        #expect(try AppendMode.ensure(pid: p.processIdentifier, paths: [live]) == 1)
        #expect(AppendMode.descriptors(pid: p.processIdentifier, paths: [live]).first.map { $0.flags & Int(O_APPEND) != 0 } == true)
        #expect(try AppendMode.ensure(pid: p.processIdentifier, paths: [live]) == 0)   // already appending
        let moved = try LogRotation.copyTruncate(.app, in: d, files: 2)
        #expect(moved >= 2000)
        usleep(100_000)
        // Without O_APPEND the file would be at least `moved` bytes again (a hole, then new lines).
        let after = LogRotation.size(live) ?? 0
        #expect(after > 0 && after < moved)
        #expect(Self.text(live)?.hasPrefix("line ") == true)
    }
}
