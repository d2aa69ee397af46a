import Foundation
import Testing
@testable import GuestBoot

@Suite struct CPIOWriterTests {
    func sampleArchive() throws -> [UInt8] {
        var w = CPIOWriter()
        try w.addDirectory("bin")
        try w.addDirectory("etc", mode: 0o750)
        try w.addFile("bin/tool", contents: Array("#!/bin/sh\necho hi\n".utf8), mode: 0o755)
        try w.addFile("etc/odd", contents: [0, 1, 2, 255, 10], mode: 0o600)   // length not a multiple of 4
        try w.addFile("etc/empty", contents: [])
        try w.addSymlink("bin/sh", target: "tool")
        try w.addDirectory("dev")
        try w.addCharacterDevice("dev/null", major: 1, minor: 3, mode: 0o666)
        #expect(w.entryCount == 8)
        return w.finish()
    }

    @Test func newcHeaderLayout() throws {
        var w = CPIOWriter(mtime: 0x1234)
        try w.addFile("a", contents: [0x41], mode: 0o644)
        let b = w.finish()
        let header = String(decoding: b[0 ..< 110], as: UTF8.self)
        #expect(header.hasPrefix("070701"))
        // ino 1, mode 0100644, uid 0, gid 0, nlink 1, mtime 0x1234, size 1, …, namesize 2, check 0
        #expect(header == "070701" + "00000001" + "000081a4" + "00000000" + "00000000" + "00000001" + "00001234"
            + "00000001" + "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000")
        #expect(Array(b[110 ..< 112]) == [0x61, 0])   // "a\0", header+name = 112, already aligned
        #expect(b[112] == 0x41)
        #expect(b.count % 4 == 0)
        #expect(String(decoding: b, as: UTF8.self).contains("TRAILER!!!"))
    }

    @Test func deterministic() throws {
        #expect(try sampleArchive() == sampleArchive())
    }

    @Test func roundTripsThroughGNUCpio() throws {
        guard let cpio = TestSupport.which("cpio") else {
            print("SKIP roundTripsThroughGNUCpio: cpio is not installed (apt-get install cpio)")
            return
        }
        let dir = try TestSupport.tempDir("cpio")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let archive = dir + "/a.cpio"
        #expect(FileManager.default.createFile(atPath: archive, contents: Data(try sampleArchive())))

        let list = try TestSupport.run(cpio, ["-t", "--quiet", "-F", archive])
        #expect(list.status == 0, "\(list.output)")
        #expect(list.output.split(separator: "\n").map(String.init)
            == ["bin", "etc", "bin/tool", "etc/odd", "etc/empty", "bin/sh", "dev", "dev/null"])

        let out = dir + "/x"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let ext = try TestSupport.run(cpio, ["-i", "-d", "-m", "--quiet", "--no-absolute-filenames", "-F", archive], cwd: out)
        #expect(ext.status == 0, "\(ext.output)")
        let fm = FileManager.default
        #expect(fm.contents(atPath: out + "/bin/tool") == Data("#!/bin/sh\necho hi\n".utf8))
        #expect(fm.contents(atPath: out + "/etc/odd") == Data([0, 1, 2, 255, 10]))
        #expect(fm.contents(atPath: out + "/etc/empty") == Data())
        #expect(try fm.destinationOfSymbolicLink(atPath: out + "/bin/sh") == "tool")
        let toolMode = try fm.attributesOfItem(atPath: out + "/bin/tool")[.posixPermissions] as? Int
        #expect(toolMode == 0o755)
        let oddMode = try fm.attributesOfItem(atPath: out + "/etc/odd")[.posixPermissions] as? Int
        #expect(oddMode == 0o600)
        let etcMode = try fm.attributesOfItem(atPath: out + "/etc")[.posixPermissions] as? Int
        #expect(etcMode == 0o750)
        if getuid() == 0 {   // only root can create the device node
            var st = stat()
            #expect(lstat(out + "/dev/null", &st) == 0)
            #expect(st.st_mode & S_IFMT == S_IFCHR)
            #expect(st.st_rdev == (1 << 8 | 3))   // Linux dev_t encoding for small numbers
        }
        // Long listing shows the mtime we chose (epoch) and owner root.
        let long = try TestSupport.run(cpio, ["-t", "-v", "--quiet", "-F", archive])
        #expect(long.output.contains("1970"), "\(long.output)")
    }

    @Test func rejectsBadEntries() throws {
        var w = CPIOWriter()
        for bad in ["", "/abs", "a/../b", "./a", "a//b", "trailing/", "a\u{0}b"] {
            #expect(throws: GuestBootError.self, "\(bad)") { try w.addFile(bad, contents: []) }
        }
        #expect(throws: GuestBootError.self) { try w.addFile("nodir/file", contents: []) }
        try w.addDirectory("d")
        #expect(throws: GuestBootError.self) { try w.addDirectory("d") }
        #expect(throws: GuestBootError.self) { try w.addSymlink("d/l", target: "") }
        _ = w.finish()
        #expect(throws: GuestBootError.self) { try w.addDirectory("late") }
    }
}
