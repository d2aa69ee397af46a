import Foundation
import Testing
@testable import OCI

@Suite(.enabled(if: pythonAvailable, "needs /usr/bin/python3 to write test tar files"))
struct UnpackTests {
    /// Writes each layer as a tar (gzip unless said otherwise) and applies them all into `root`.
    func unpack(_ layers: [[TarEntry]], into root: String, in dir: TempDir, compression: String = "gzip",
                limits: UnpackLimits = UnpackLimits()) throws -> UnpackStats {
        var sources: [LayerSource] = []
        for (i, entries) in layers.enumerated() {
            let p = dir.sub("layer\(i)")
            try makeTar(entries, at: p, compression: compression)
            sources.append(LayerSource(path: p, compression: compression == "zstd" ? .zstd : compression == "gzip" ? .gzip : .none))
        }
        return try LayerUnpacker.unpack(sources, into: root, limits: limits)
    }

    @Test(arguments: ["gzip", "zstd", "none"])
    func basicEntriesWithModesAndTimes(compression: String) throws {
        let dir = TempDir("unpack"), root = dir.sub("root")
        let stats = try unpack([[
            .dir("bin", mode: 0o750),
            .file("bin/tool", "#!/bin/sh\n", mode: 0o4755),
            .symlink("bin/sh", to: "tool"),
            .hardlink("bin/tool2", to: "bin/tool"),
            .file("deep/er/file", "x"),   // parents made implicitly
            TarEntry(path: "pipe", type: "fifo", mode: 0o600),
        ]], into: root, in: dir, compression: compression)
        #expect(stats.entries == 6)
        #expect(readText(root + "/bin/tool") == "#!/bin/sh\n")
        #expect(readText(root + "/deep/er/file") == "x")
        var st = stat()
        #expect(stat(root + "/bin/tool", &st) == 0 && st.st_mode & 0o7777 == 0o4755)
        #expect(st.st_mtim.tv_sec == 1600000000)
        #expect(st.st_nlink == 2)
        #expect(lstat(root + "/bin", &st) == 0 && st.st_mode & 0o777 == 0o750)
        #expect(st.st_mtim.tv_sec == 1600000000)   // directory times are applied last
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: root + "/bin/sh")) == "tool")
        #expect(lstat(root + "/pipe", &st) == 0 && (st.st_mode & S_IFMT) == S_IFIFO)
    }

    @Test func ownershipAndDevicesAsRoot() throws {
        guard isRoot else { print("skipping ownershipAndDevicesAsRoot: not running as root"); return }
        let dir = TempDir("unpack"), root = dir.sub("root")
        let stats = try unpack([[
            .file("owned", "o", uid: 1234),
            TarEntry(path: "dev/null", type: "chr", mode: 0o666, major: 1, minor: 3),
            TarEntry(path: "dev/sda", type: "chr", mode: 0o660, major: 8, minor: 0),
        ]], into: root, in: dir)
        var st = stat()
        #expect(stat(root + "/owned", &st) == 0 && st.st_uid == 1234)
        #expect(lstat(root + "/dev/null", &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR)
        #expect(!exists(root + "/dev/sda"))
        #expect(stats.skipped == 1)
    }

    @Test func whiteoutsRemoveLowerFilesAndDirectories() throws {
        let dir = TempDir("unpack"), root = dir.sub("root")
        let stats = try unpack([
            [.file("etc/passwd", "root"), .file("etc/group", "g"), .dir("var/cache"), .file("var/cache/a", "a"),
             .file("var/cache/sub/b", "b"), .file("keep", "1")],
            [.file("etc/.wh.passwd", ""), .file("var/.wh.cache", ""), .file(".wh.nothing-there", ""), .file("keep", "2")],
        ], into: root, in: dir)
        #expect(!exists(root + "/etc/passwd"))
        #expect(readText(root + "/etc/group") == "g")
        #expect(!exists(root + "/var/cache"))
        #expect(exists(root + "/var"))
        #expect(!exists(root + "/etc/.wh.passwd"))   // markers are never written
        #expect(readText(root + "/keep") == "2")
        #expect(stats.whiteouts == 3)
    }

    @Test func opaqueDirectoryKeepsOnlyThisLayersContent() throws {
        let dir = TempDir("unpack"), root = dir.sub("root")
        _ = try unpack([
            [.file("app/old", "o"), .file("app/sub/deep", "d"), .file("app/sub/keepme", "k"), .file("other/x", "x")],
            // the new file comes before the marker in tar order: it must survive
            [.file("app/sub/keepme", "new k"), .file("app/.wh..wh..opq", ""), .file("app/fresh", "f")],
        ], into: root, in: dir)
        #expect(!exists(root + "/app/old"))
        #expect(!exists(root + "/app/sub/deep"))
        #expect(readText(root + "/app/sub/keepme") == "new k")
        #expect(readText(root + "/app/fresh") == "f")
        #expect(readText(root + "/other/x") == "x")
        #expect(!exists(root + "/app/.wh..wh..opq"))
    }

    @Test func replacingTypes() throws {
        let dir = TempDir("unpack"), root = dir.sub("root")
        _ = try unpack([
            [.file("a", "file"), .dir("b"), .file("b/inner", "i"), .symlink("c", to: "/etc")],
            [.dir("a"), .file("a/now-dir", "d"), .file("b", "now a file"), .file("c", "not through the link")],
        ], into: root, in: dir)
        #expect(readText(root + "/a/now-dir") == "d")
        #expect(readText(root + "/b") == "now a file")
        var st = stat()
        #expect(lstat(root + "/c", &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG)
        #expect(readText(root + "/c") == "not through the link")
    }

    @Test func leadingSlashIsRelativeToTheRoot() throws {
        let dir = TempDir("unpack"), root = dir.sub("root")
        _ = try unpack([[TarEntry.dir("/"), TarEntry.file("/abs", "x")]], into: root, in: dir)
        #expect(readText(root + "/abs") == "x")
        #expect(!exists(dir.path + "/abs"))
    }

    @Test(arguments: [
        [TarEntry.file("../escape", "x")],
        [TarEntry.file("a/../../escape", "x")],
        [TarEntry.hardlink("h", to: "../../etc/passwd")],
        [TarEntry.hardlink("h", to: "/etc/passwd")],
        [TarEntry.hardlink("h", to: "not-extracted-yet")],
        [TarEntry.dir("d"), TarEntry.hardlink("h", to: "d")],
    ])
    func rejectsEscapes(entries: [TarEntry]) throws {
        let dir = TempDir("unpack"), root = dir.sub("root")
        do {
            _ = try unpack([entries], into: root, in: dir)
            Issue.record("unpack accepted \(entries.map(\.path))")
        } catch let e as OCIError {
            guard case .unsafeLayer = e else { Issue.record("wrong error \(e)"); return }
        }
        #expect(!exists(dir.path + "/escape"))
        #expect(!exists(dir.sub("abs")))
    }

    @Test func symlinksInParentsStayInsideTheRoot() throws {
        let dir = TempDir("unpack"), root = dir.sub("root")
        let outside = dir.sub("outside")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        _ = try unpack([
            [.symlink("abs", to: outside), .symlink("up", to: "../../../../.."), .symlink("lib", to: "usr/lib"), .dir("usr/lib")],
            [.file("abs/planted", "a"), .file("up/planted2", "b"), .file("lib/libx.so", "l")],
        ], into: root, in: dir)
        // Absolute targets restart at the root, `..` stops there: nothing lands outside.
        #expect(!exists(outside + "/planted"))
        #expect(!exists(dir.path + "/planted2"))
        #expect(readText(root + outside + "/planted") == "a")
        #expect(readText(root + "/planted2") == "b")
        #expect(readText(root + "/usr/lib/libx.so") == "l")
        // The final component is never followed: a symlink entry pointing out is just a symlink.
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: root + "/abs")) == outside)
    }

    @Test func finalSymlinkIsReplacedNotFollowed() throws {
        let dir = TempDir("unpack"), root = dir.sub("root")
        let victim = dir.sub("victim")
        FileManager.default.createFile(atPath: victim, contents: Data("original".utf8))
        _ = try unpack([[.symlink("f", to: victim)], [.file("f", "overwritten")]], into: root, in: dir)
        #expect(readText(victim) == "original")
        #expect(readText(root + "/f") == "overwritten")
    }

    @Test func entryLimit() throws {
        let dir = TempDir("unpack"), root = dir.sub("root")
        let many = (0..<20).map { TarEntry.file("f\($0)", "x") }
        #expect(throws: OCIError.self) {
            _ = try unpack([many], into: root, in: dir, limits: UnpackLimits(maxEntries: 10))
        }
        let dir2 = TempDir("unpack")
        #expect(try unpack([many], into: dir2.sub("root"), in: dir2, limits: UnpackLimits(maxEntries: 20)).entries == 20)
    }

    @Test func byteLimit() throws {
        let dir = TempDir("unpack"), root = dir.sub("root")
        let big = String(repeating: "z", count: 100_000)
        do {
            _ = try unpack([[.file("a", big), .file("b", big)]], into: root, in: dir, limits: UnpackLimits(maxBytes: 150_000))
            Issue.record("byte limit not enforced")
        } catch let e as OCIError {
            guard case .limitExceeded = e else { Issue.record("wrong error \(e)"); return }
        }
    }

    @Test func corruptLayerIsAnError() throws {
        let dir = TempDir("unpack")
        let p = dir.sub("junk")
        FileManager.default.createFile(atPath: p, contents: Data(repeating: 0x1f, count: 300))
        #expect(throws: OCIError.self) { _ = try LayerUnpacker.unpack([LayerSource(path: p, compression: .gzip)], into: dir.sub("root")) }
    }
}

@Suite(.enabled(if: pythonAvailable, "needs /usr/bin/python3 to write test tar files"))
struct TruncatedTailTests {
    /// Cuts a plain tar at `keep` bytes.
    func cut(_ entries: [TarEntry], keep: (Int) -> Int, dir: TempDir) throws -> String {
        let p = dir.sub("layer")
        try makeTar(entries, at: p, compression: "none")
        let data = try Data(contentsOf: URL(fileURLWithPath: p))
        try data.prefix(keep(data.count)).write(to: URL(fileURLWithPath: p))
        return p
    }

    @Test func missingPaddingAfterTheLastFileIsAccepted() throws {
        let dir = TempDir("trunc")
        // PAX: each entry is a 512-byte pax header block + its data block, then header + data.
        // Keep everything up to 3 bytes into the last file's data block.
        let entries = [TarEntry.file("a", "first"), TarEntry.file("b", "abc")]
        let plain = dir.sub("full")
        try makeTar(entries, at: plain, compression: "none")
        let full = try Data(contentsOf: URL(fileURLWithPath: plain))
        guard let idx = full.range(of: Data("abc".utf8))?.lowerBound else { Issue.record("no data"); return }
        let p = try cut(entries, keep: { _ in idx + 3 }, dir: dir)
        _ = try LayerUnpacker.unpack([LayerSource(path: p, compression: .none)], into: dir.sub("root"))
        #expect(readText(dir.sub("root") + "/b") == "abc")
    }

    @Test func missingFileDataIsStillAnError() throws {
        let dir = TempDir("trunc")
        let entries = [TarEntry.file("a", "first"), TarEntry.file("b", "abcdef")]
        let plain = dir.sub("full")
        try makeTar(entries, at: plain, compression: "none")
        let full = try Data(contentsOf: URL(fileURLWithPath: plain))
        guard let idx = full.range(of: Data("abcdef".utf8))?.lowerBound else { Issue.record("no data"); return }
        let p = try cut(entries, keep: { _ in idx + 3 }, dir: dir)
        #expect(throws: OCIError.self) { _ = try LayerUnpacker.unpack([LayerSource(path: p, compression: .none)], into: dir.sub("root")) }
    }
}
