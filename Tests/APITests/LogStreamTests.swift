import Testing
import Foundation
@testable import API
import Model

/// Followed-log line splitting (partial lines after a cap), the linear bounded tail across the
/// rotated and live files, and a follower that goes on across both kinds of rotation.
@Suite(.serialized) struct LogStreamTests {
    static func tempDir() throws -> String {
        let d = "/tmp/logstream-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    static func write(_ path: String, _ bytes: [UInt8]) {
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }

    static func append(_ path: String, _ text: String) {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        _ = Array(text.utf8).withUnsafeBytes { Glibc.write(fd, $0.baseAddress!, $0.count) }
        close(fd)
    }

    static func lines(_ r: ClosedRange<Int>) -> String { r.map { "line \($0)\n" }.joined() }

    @Test func longOutputWithoutNewlinesIsSentInCappedPieces() {
        var s = LineSplitter(maxLine: 64 * 1024)
        var pieces: [Int] = []
        let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 64 * 1024 + 17)
        let total = 16 << 20
        var fed = 0
        while fed < total {
            let c = Array(chunk.prefix(total - fed))
            s.feed(c) { pieces.append($0.count) }
            fed += c.count
            #expect(s.pending.count < 64 * 1024)
        }
        s.feed([10]) { pieces.append($0.count) }
        #expect(pieces.allSatisfy { $0 <= 64 * 1024 })
        #expect(pieces.reduce(0, +) == total)
        #expect(pieces.count == (total + 64 * 1024 - 1) / (64 * 1024))
        #expect(s.scanned == total + 1)   // each byte looked at once
        // Lines split across reads come out whole.
        var t = LineSplitter(maxLine: 100)
        var out: [String] = []
        for c in ["ab", "c\nde", "f\n\ng"] { t.feed(Array(c.utf8)) { out.append(String(decoding: $0, as: UTF8.self)) } }
        #expect(out == ["abc", "def", ""])
        #expect(t.pending == Array("g".utf8))
    }

    @Test func piecesNeverSplitAUTF8Sequence() {
        var s = LineSplitter(maxLine: 1001)
        var pieces: [[UInt8]] = []
        s.feed(Array(String(repeating: "é€😀", count: 2000).utf8) + [10]) { pieces.append(Array($0)) }
        #expect(pieces.count > 5)
        for p in pieces {
            #expect(p.count <= 1001)
            #expect(!String(decoding: p, as: UTF8.self).contains("\u{FFFD}"))
        }
    }

    @Test func tailOfA50MBLineReadsABoundedAmount() throws {
        let d = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let path = d + "/app.log"
        var big = [UInt8](repeating: UInt8(ascii: "y"), count: 50 << 20)
        big += Array("\nlast\n".utf8)
        Self.write(path, big)
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var seg = LogSegments(fds: [fd])
        let t = LogStream.tailLines(&seg, 10, maxBytes: 4 << 20, maxLine: 64 * 1024)
        // At most the byte cap (plus one block) is read, whatever the line length.
        #expect(seg.bytesRead <= (4 << 20) + 64 * 1024)
        #expect(t.lines.count == 10)
        #expect(String(decoding: t.lines.last!, as: UTF8.self) == "last")
        #expect(t.lines.dropLast().allSatisfy { $0.count <= 64 * 1024 && $0.allSatisfy { $0 == UInt8(ascii: "y") } })
        #expect(t.end == Int64(big.count))
    }

    @Test func tailOfShortLinesReadsOnlyWhatItNeeds() throws {
        let d = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        Self.write(d + "/app.log", Array(Self.lines(1...200_000).utf8) + Array("partial".utf8))
        let fd = open(d + "/app.log", O_RDONLY)
        defer { close(fd) }
        var seg = LogSegments(fds: [fd])
        let t = LogStream.tailLines(&seg, 100, maxBytes: 4 << 20, maxLine: 64 * 1024)
        #expect(t.lines.map { String(decoding: $0, as: UTF8.self) } == (200_000 - 99...200_000).map { "line \($0)" })
        #expect(seg.bytesRead <= 64 * 1024)
        #expect(t.end == seg.total - Int64("partial".utf8.count))
    }

    @Test func tailReadsAcrossRotatedFiles() throws {
        let d = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        Self.write(GuestLogFiles.rotated(.app, 2, in: d), Array(Self.lines(1...10).utf8))
        Self.write(GuestLogFiles.rotated(.app, 1, in: d), Array(Self.lines(11...50).utf8) + Array("spl".utf8))
        Self.write(GuestLogFiles.live(.app, in: d), Array("it\n".utf8) + Array(Self.lines(51...60).utf8))
        let live = open(GuestLogFiles.live(.app, in: d), O_RDONLY)
        defer { close(live) }
        var seg = LogSegments.open(.app, in: d, live: live)
        #expect(seg.fds.count == 3)
        let t = LogStream.tailLines(&seg, 15, maxBytes: 4 << 20, maxLine: 64 * 1024)
        let got = t.lines.map { String(decoding: $0, as: UTF8.self) }
        #expect(got == (47...50).map { "line \($0)" } + ["split"] + (51...60).map { "line \($0)" })
        let all = LogStream.tailLines(&seg, 1000, maxBytes: 4 << 20, maxLine: 64 * 1024)
        #expect(all.lines.count == 61)
        #expect(String(decoding: all.lines.first!, as: UTF8.self) == "line 1")
        seg.closeRotated()
    }

    /// Drives a follower until it has nothing new; returns the lines it sent.
    static func drain(_ f: inout Follower) -> [String] {
        var out: [String] = []
        while f.step(emit: { out.append(String(decoding: $0, as: UTF8.self)) }) == .progressed {}
        return out
    }

    @Test func followerGoesOnAcrossCopyTruncate() throws {
        let d = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let live = GuestLogFiles.live(.app, in: d)
        Self.append(live, Self.lines(1...5))
        var f = Follower(source: .app, dir: d, fd: open(live, O_RDONLY))
        defer { f.close() }
        #expect(Self.drain(&f) == (1...5).map { "line \($0)" })
        // The writer goes on (half a line included) before the rotation copies the file away.
        Self.append(live, Self.lines(6...8) + "half-")
        let content = try Data(contentsOf: URL(fileURLWithPath: live))
        Self.write(d + "/tmp", Array(content))
        rename(d + "/tmp", GuestLogFiles.rotated(.app, 1, in: d))
        truncate(live, 0)
        Self.append(live, "line\n" + Self.lines(9...10))
        #expect(Self.drain(&f) == (6...8).map { "line \($0)" } + ["half-line"] + (9...10).map { "line \($0)" })
        Self.append(live, Self.lines(11...11))
        #expect(Self.drain(&f) == ["line 11"])
    }

    @Test func followerGoesOnAcrossRename() throws {
        let d = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let live = GuestLogFiles.live(.hypeman, in: d)
        Self.append(live, Self.lines(1...2))
        var f = Follower(source: .hypeman, dir: d, fd: open(live, O_RDONLY))
        defer { f.close() }
        #expect(Self.drain(&f) == ["line 1", "line 2"])
        Self.append(live, Self.lines(3...4))
        rename(live, GuestLogFiles.rotated(.hypeman, 1, in: d))
        #expect(Self.drain(&f) == ["line 3", "line 4"])   // the old file, read to its end
        Self.append(live, Self.lines(5...6))
        #expect(Self.drain(&f) == ["line 5", "line 6"])
        // Gone with its directory.
        try FileManager.default.removeItem(atPath: d)
        #expect(f.step(emit: { _ in }) == .gone)
    }
}
