import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a directory tree needs on a 4 KiB-block file system.
public struct DirectoryUsage: Sendable, Equatable {
    /// Bytes of data blocks (files and directories rounded up to 4 KiB, long symlinks one block).
    public var bytes: Int64
    /// Files, directories, links and nodes (the root included).
    public var entries: Int
}

/// Builds disk images with e2fsprogs / erofs-utils: journal-less ext4 from a directory, empty ext4
/// for overlays and volumes, erofs as an option, and sparse files.
public enum DiskImage {
    public static let blockSize: Int64 = 4096
    public static let minimumSize: Int64 = 16 << 20
    /// Inode table entry size used by mkfs.ext4 (for headroom).
    static let inodeSize: Int64 = 256

    /// Walks `dir` without following symlinks.
    public static func measure(_ dir: String) throws(DiskError) -> DirectoryUsage {
        var usage = DirectoryUsage(bytes: 0, entries: 0)
        // File sizes are whatever a (possibly hostile) archive produced: sums are checked.
        func roundUp(_ n: Int64) throws(DiskError) -> Int64 {
            let (r, o) = n.addingReportingOverflow(blockSize - 1)
            guard !o, n >= 0 else { throw .invalid("a file of \(n) bytes is too large for a disk") }
            return r / blockSize * blockSize
        }
        func add(_ n: Int64) throws(DiskError) {
            let (r, o) = usage.bytes.addingReportingOverflow(n)
            guard !o else { throw .invalid("the tree is too large for a disk") }
            usage.bytes = r
        }
        func walk(_ fd: Int32, _ path: String) throws(DiskError) {
            guard let d = fdopendir(fd) else { close(fd); throw .io("cannot read directory \(path): \(String(cString: strerror(errno)))") }
            defer { closedir(d) }
            while let ent = readdir(d) {
                let name = withUnsafePointer(to: &ent.pointee.d_name) {
                    String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
                }
                if name == "." || name == ".." { continue }
                var st = stat()
                guard fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                    throw .io("cannot stat \(path)/\(name): \(String(cString: strerror(errno)))")
                }
                usage.entries += 1
                switch st.st_mode & S_IFMT {
                case S_IFREG: try add(try roundUp(Int64(st.st_size)))
                case S_IFLNK: if st.st_size >= 60 { try add(blockSize) }
                case S_IFDIR:
                    try add(max(blockSize, try roundUp(Int64(st.st_size))))
                    let cfd = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    guard cfd >= 0 else { throw .io("cannot open \(path)/\(name): \(String(cString: strerror(errno)))") }
                    try walk(cfd, path + "/" + name)
                default: break
                }
            }
        }
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("cannot open directory \(dir): \(String(cString: strerror(errno)))") }
        usage.entries += 1
        usage.bytes += blockSize
        try walk(fd, dir)
        return usage
    }

    /// Disk size for a tree: content + 50 %, plus inode tables, at least 16 MiB, whole MiB.
    /// Saturates at `Int64.max`; `checkedExt4Size` says when the arithmetic would overflow.
    public static func ext4Size(for usage: DirectoryUsage) -> Int64 {
        checkedExt4Size(for: usage) ?? Int64.max
    }

    /// `ext4Size`, or nil when the arithmetic overflows (a tree no disk can hold).
    public static func checkedExt4Size(for usage: DirectoryUsage) -> Int64? {
        let mib: Int64 = 1 << 20
        guard usage.bytes >= 0 else { return nil }
        let (inodeBytes, o1) = Int64(inodeCount(for: usage)).multipliedReportingOverflow(by: inodeSize)
        var raw = usage.bytes
        for term in [usage.bytes / 2, inodeBytes, 4 << 20, mib - 1] {
            let (r, o) = raw.addingReportingOverflow(term)
            if o || o1 { return nil }
            raw = r
        }
        return max(minimumSize, raw / mib * mib)
    }

    /// Inodes to ask mkfs for: every entry plus a quarter, at least 4096.
    static func inodeCount(for usage: DirectoryUsage) -> Int {
        max(4096, usage.entries + usage.entries / 4 + 256)
    }

    /// Creates a new sparse file of `size` bytes (fails if it exists).
    public static func createSparseFile(at path: String, size: Int64) throws(DiskError) {
        guard size > 0 else { throw .invalid("disk size must be positive, got \(size)") }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else {
            let e = errno
            unlink(path)
            throw .io("cannot size \(path) to \(size) bytes: \(String(cString: strerror(e)))")
        }
    }

    /// Builds a journal-less ext4 image of `directory` at `path` (which must not exist), sized from
    /// the content; if mkfs runs out of room it retries once with twice the size. Returns the size.
    /// On failure no file is left at `path`.
    @discardableResult
    public static func makeExt4(from directory: String, at path: String, label: String? = nil) throws(DiskError) -> Int64 {
        let mkfs = try Tool.find("mkfs.ext4", package: "e2fsprogs")
        let usage = try measure(directory)
        guard var size = checkedExt4Size(for: usage) else { throw .invalid("the tree is too large for a disk") }
        let inodes = inodeCount(for: usage)
        var attempt = 0
        while true {
            attempt += 1
            try createSparseFile(at: path, size: size)
            var args = ["-q", "-F", "-t", "ext4", "-b", "4096", "-O", "^has_journal", "-m", "0", "-N", String(inodes)]
            if let label { args += ["-L", String(label.prefix(16))] }
            args += ["-d", directory, path]
            let r: Tool.Result
            do { r = try Tool.run(mkfs, args) } catch { unlink(path); throw error }
            if r.status == 0 { return size }
            unlink(path)
            let outOfRoom = r.output.contains("Could not allocate block") || r.output.contains("No space left")
                || r.output.contains("Could not allocate inode")
            if outOfRoom && attempt == 1, case (let doubled, false) = size.multipliedReportingOverflow(by: 2) { size = doubled; continue }
            throw .toolFailed(tool: "mkfs.ext4", status: r.status, output: r.output,
                              hint: outOfRoom ? "the content did not fit in \(size) bytes even after a retry; check for sparse or huge files in the image"
                                              : "check that \(directory) is readable and that the disk at \(path) can be written")
        }
    }

    /// An empty ext4 file system of `size` bytes at `path` (overlays, volumes). With a journal by default.
    public static func makeEmptyExt4(at path: String, size: Int64, label: String? = nil, journal: Bool = true) throws(DiskError) {
        guard size >= minimumSize else { throw .invalid("an ext4 disk needs at least \(minimumSize) bytes, got \(size)") }
        let mkfs = try Tool.find("mkfs.ext4", package: "e2fsprogs")
        try createSparseFile(at: path, size: size)
        var args = ["-q", "-F", "-t", "ext4", "-b", "4096"]
        if !journal { args += ["-O", "^has_journal"] }
        if let label { args += ["-L", String(label.prefix(16))] }
        args.append(path)
        let r: Tool.Result
        do { r = try Tool.run(mkfs, args) } catch { unlink(path); throw error }
        guard r.status == 0 else {
            unlink(path)
            throw .toolFailed(tool: "mkfs.ext4", status: r.status, output: r.output, hint: "check free space where \(path) lives")
        }
    }

    public enum EROFSCompression: String, Sendable { case none, lz4, lz4hc }

    /// An erofs image of `directory` at `path` (read-only root disks; smaller with lz4/lz4hc).
    @discardableResult
    public static func makeEROFS(from directory: String, at path: String, compression: EROFSCompression = .none) throws(DiskError) -> Int64 {
        let mkfs = try Tool.find("mkfs.erofs", package: "erofs-utils")
        guard access(path, F_OK) != 0 else { throw .invalid("\(path) already exists") }
        var args: [String] = ["--quiet"]
        if compression != .none { args.append("-z" + compression.rawValue) }
        args += [path, directory]
        let r: Tool.Result
        do { r = try Tool.run(mkfs, args) } catch { unlink(path); throw error }
        guard r.status == 0 else {
            unlink(path)
            throw .toolFailed(tool: "mkfs.erofs", status: r.status, output: r.output,
                              hint: "check that \(directory) is readable and there is free space for \(path)")
        }
        var st = stat()
        guard stat(path, &st) == 0 else { throw .io("mkfs.erofs left no file at \(path)") }
        return Int64(st.st_size)
    }
}
