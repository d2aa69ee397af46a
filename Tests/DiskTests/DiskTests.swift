import Foundation
import Testing
@testable import Disk

final class Scratch {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "/hm-disk-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func sh(_ cmd: String) -> (status: Int32, out: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", cmd]
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    do { try p.run() } catch { return (-1, "\(error)") }
    let d = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: d, as: UTF8.self))
}

let haveE2fs = FileManager.default.isExecutableFile(atPath: "/usr/sbin/mkfs.ext4") || FileManager.default.isExecutableFile(atPath: "/sbin/mkfs.ext4")
let haveErofs = FileManager.default.isExecutableFile(atPath: "/usr/bin/mkfs.erofs")

/// A small tree: files, a symlink, an executable, an empty dir.
func makeTree(_ root: String, bigFiles: Int = 0) throws {
    let fm = FileManager.default
    try fm.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
    try fm.createDirectory(atPath: root + "/empty", withIntermediateDirectories: true)
    fm.createFile(atPath: root + "/bin/hello", contents: Data("#!/bin/sh\necho hi\n".utf8), attributes: [.posixPermissions: 0o755])
    try fm.createSymbolicLink(atPath: root + "/bin/sh", withDestinationPath: "hello")
    for i in 0..<bigFiles {
        fm.createFile(atPath: root + "/big\(i)", contents: Data(repeating: UInt8(i), count: 3 << 20))
    }
}

@Suite struct DiskTests {
    @Test func measureCountsBlocksAndEntries() throws {
        let s = Scratch()
        try makeTree(s.path + "/t")
        let u = try DiskImage.measure(s.path + "/t")
        #expect(u.entries == 5)   // root, bin, empty, hello, sh
        #expect(u.bytes == 4 * 4096)   // root, bin, empty dirs + hello (short symlink is free)
        #expect(DiskImage.ext4Size(for: u) == 16 << 20)
        #expect(DiskImage.ext4Size(for: DirectoryUsage(bytes: 100 << 20, entries: 5000)) >= 150 << 20)
    }

    @Test func sparseFileTakesNoSpace() throws {
        let s = Scratch()
        let p = s.path + "/sparse.raw"
        try DiskImage.createSparseFile(at: p, size: 1 << 30)
        var st = stat()
        #expect(stat(p, &st) == 0)
        #expect(st.st_size == 1 << 30)
        #expect(st.st_blocks < 64)
        #expect(throws: DiskError.self) { try DiskImage.createSparseFile(at: p, size: 4096) }   // exists
        #expect(throws: DiskError.self) { try DiskImage.createSparseFile(at: s.path + "/z", size: 0) }
    }

    @Test(.enabled(if: haveE2fs, "mkfs.ext4 not installed (e2fsprogs)"))
    func ext4FromDirectoryChecksCleanAndHoldsTheFiles() throws {
        let s = Scratch()
        try makeTree(s.path + "/t", bigFiles: 4)
        let disk = s.path + "/root.ext4"
        let size = try DiskImage.makeExt4(from: s.path + "/t", at: disk, label: "rootfs")
        var st = stat()
        #expect(stat(disk, &st) == 0 && Int64(st.st_size) == size)
        #expect(size >= 16 << 20)
        let fsck = sh("e2fsck -fn \(disk)")
        #expect(fsck.status == 0, "\(fsck.out)")
        let ls = sh("debugfs -R 'ls -l /bin' \(disk) 2>/dev/null")
        #expect(ls.out.contains("hello"))
        let cat = sh("debugfs -R 'cat /bin/hello' \(disk) 2>/dev/null")
        #expect(cat.out == "#!/bin/sh\necho hi\n")
        let features = sh("dumpe2fs -h \(disk) 2>/dev/null")
        #expect(!features.out.contains("has_journal"))
        #expect(features.out.contains("Block size:               4096"))
        #expect(features.out.contains("Filesystem volume name:   rootfs"))
    }

    @Test(.enabled(if: haveE2fs, "mkfs.ext4 not installed (e2fsprogs)"))
    func ext4ErrorsSayWhatToDoAndLeaveNothing() throws {
        let s = Scratch()
        let disk = s.path + "/x.ext4"
        do {
            try DiskImage.makeExt4(from: s.path + "/missing", at: disk)
            Issue.record("missing source accepted")
        } catch {
            #expect("\(error)".contains("missing"))
        }
        #expect(!FileManager.default.fileExists(atPath: disk))
        // An existing target is refused and kept.
        FileManager.default.createFile(atPath: disk, contents: Data("keep".utf8))
        try makeTree(s.path + "/t")
        #expect(throws: DiskError.self) { try DiskImage.makeExt4(from: s.path + "/t", at: disk) }
        #expect(FileManager.default.contents(atPath: disk) == Data("keep".utf8))
    }

    @Test(.enabled(if: haveE2fs, "mkfs.ext4 not installed (e2fsprogs)"))
    func emptyExt4ForOverlays() throws {
        let s = Scratch()
        let disk = s.path + "/overlay.raw"
        try DiskImage.makeEmptyExt4(at: disk, size: 64 << 20, label: "overlay")
        #expect(sh("e2fsck -fn \(disk)").status == 0)
        #expect(sh("dumpe2fs -h \(disk) 2>/dev/null").out.contains("has_journal"))
        #expect(throws: DiskError.self) { try DiskImage.makeEmptyExt4(at: s.path + "/tiny", size: 1 << 20) }
    }

    @Test(.enabled(if: haveErofs, "mkfs.erofs not installed (erofs-utils)"))
    func erofsImage() throws {
        let s = Scratch()
        try makeTree(s.path + "/t", bigFiles: 2)
        let plain = try DiskImage.makeEROFS(from: s.path + "/t", at: s.path + "/a.erofs")
        let lz4 = try DiskImage.makeEROFS(from: s.path + "/t", at: s.path + "/b.erofs", compression: .lz4hc)
        #expect(plain > 6 << 20)
        #expect(lz4 < plain)
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/fsck.erofs") {
            #expect(sh("fsck.erofs \(s.path)/a.erofs").status == 0)
        }
    }

    @Test func missingToolSaysWhichPackage() {
        do {
            _ = try Tool.find("mkfs.definitely-not-here", package: "some-package")
            Issue.record("found a tool that does not exist")
        } catch {
            #expect(error == .toolMissing(tool: "mkfs.definitely-not-here", package: "some-package"))
            #expect(error.description.contains("install the Debian package some-package"))
        }
    }
}
