import CArchive
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Stops tar bombs: totals over all layers applied by one unpacker.
public struct UnpackLimits: Sendable, Equatable {
    /// Regular-file bytes written.
    public var maxBytes: Int64
    /// Tar entries read (whiteouts included).
    public var maxEntries: Int
    /// Longest entry path.
    public var maxPathBytes: Int

    /// A user's archive rather than an image layer: `.wh.` names are ordinary files, device nodes
    /// and FIFOs are skipped, and symlinks must point inside the tree (no absolute targets, no
    /// `..` above the root).
    public var plainArchive: Bool

    public init(maxBytes: Int64 = 32 << 30, maxEntries: Int = 2_000_000, maxPathBytes: Int = 4096, plainArchive: Bool = false) {
        self.maxBytes = maxBytes; self.maxEntries = maxEntries; self.maxPathBytes = maxPathBytes
        self.plainArchive = plainArchive
    }
}

/// What an unpack did.
public struct UnpackStats: Sendable, Equatable {
    public var entries = 0
    public var bytes: Int64 = 0
    public var whiteouts = 0
    /// Device nodes not created (not root, or not on the safe list), sockets.
    public var skipped = 0
}

/// A layer blob on disk (tar, tar+gzip or tar+zstd; the compression is detected from the bytes).
public struct LayerSource: Sendable {
    public var path: String
    public var compression: LayerCompression
    /// How errors name it (never a host path): the file name, i.e. the blob's hex digest.
    public var label: String
    public init(path: String, compression: LayerCompression, label: String? = nil) {
        self.path = path; self.compression = compression
        self.label = label ?? "layer " + String(path.split(separator: "/").last ?? "")
    }
}

/// Applies OCI layers, in order, to a root directory without ever leaving it.
///
/// Safety rules: entry paths must be relative and free of `..` (else `.unsafeLayer`); every path is
/// walked one component at a time from an open root descriptor with `O_NOFOLLOW`; a symlink met
/// in a *parent* is resolved inside the root (absolute targets restart at the root, `..` stops at
/// it), and the final component is never followed: it is unlinked and recreated. Hardlinks may
/// only point at entries already extracted inside the root, and never at directories.
/// Whiteouts: `.wh.<name>` removes `<name>` from lower layers; `.wh..wh..opq` removes everything
/// in its directory that this layer did not write; other `.wh..wh.*` markers are ignored.
/// Devices: as root, only `null zero full random urandom tty console ptmx` are created (character
/// devices with their standard numbers); all other device nodes and sockets are skipped. FIFOs are made.
/// Ownership is applied when running as root; modes and mtimes always; extended attributes are not
/// restored (Glibc's module does not expose `fsetxattr`). Directory metadata is applied at `finish()`.
public final class LayerUnpacker {
    public let rootPath: String
    public let limits: UnpackLimits
    /// Decompress on a helper thread, overlapping with file writes (default). Off: inline.
    public var inflateOnThread = true
    public private(set) var stats = UnpackStats()
    private let rootFD: Int32
    private let isRoot: Bool
    private var dirMeta: [String: DirMeta] = [:]
    /// Last resolved parent: entry parent components → open fd and resolved path.
    private var cache: (key: ArraySlice<String>, fd: Int32, path: String)?
    /// Paths written by the layer being applied (resolved, `/`-joined, relative to the root).
    private var written: Set<String> = []
    private var finished = false
    private var staleFDs: [Int32] = []
    /// The layer ended inside the padding after its last file (see `regularFile`).
    private var truncatedTail = false

    struct DirMeta { var mode: mode_t; var uid: uid_t; var gid: gid_t; var mtime: timespec? }

    /// Opens (creating if needed) the root directory.
    public init(root: String, limits: UnpackLimits = UnpackLimits()) throws(OCIError) {
        self.rootPath = root
        self.limits = limits
        if mkdir(root, 0o755) != 0 && errno != EEXIST { throw .io("cannot create \(root): \(Self.err())") }
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("cannot open \(root): \(Self.err())") }
        rootFD = fd
        isRoot = geteuid() == 0
    }

    deinit {
        dropCache()
        closeStale()
        close(rootFD)
    }

    /// Convenience: applies all layers and finishes.
    public static func unpack(_ layers: [LayerSource], into root: String,
                              limits: UnpackLimits = UnpackLimits()) throws(OCIError) -> UnpackStats {
        let u = try LayerUnpacker(root: root, limits: limits)
        for l in layers { try u.apply(l) }
        try u.finish()
        return u.stats
    }

    /// Applies one layer on top of what is there.
    public func apply(_ layer: LayerSource) throws(OCIError) {
        precondition(!finished, "apply after finish")
        guard let a = archive_read_new() else { throw .io("archive_read_new failed") }
        defer { archive_read_free(a) }
        archive_read_support_format_tar(a)
        // Compressed layers are decompressed on a second thread and streamed to this one over a
        // socket pair: inflating and writing files overlap (no intermediate copy).
        var inflater: Inflater?
        if inflateOnThread, layer.compression != .none, let inf = Inflater(path: layer.path, label: layer.label) {
            inflater = inf
            guard archive_read_open_fd(a, inf.readFD, 1 << 20) == ARCHIVE_OK else {
                // What the inflater reads is the layer's content: a failure here is the layer's
                // (the inflater's own error, if it had one, says more).
                let why = Self.archiveError(a)
                if let e = inf.finish() { throw e }
                throw .unsafeLayer("\(layer.label): not a tar archive: \(why)")
            }
        } else {
            archive_read_support_filter_gzip(a)
            archive_read_support_filter_zstd(a)
            guard archive_read_open_filename(a, layer.path, 1 << 20) == ARCHIVE_OK else {
                // Bad content is the layer's fault (named by its label); anything else is the host's.
                if archive_errno(a) == EILSEQ { throw .unsafeLayer("\(layer.label): not a tar archive: \(Self.archiveError(a))") }
                throw .io("cannot open layer \(layer.path): \(Self.archiveError(a))")
            }
        }
        do {
            try applyEntries(a, layer)
        } catch {
            if let inflater, let e = inflater.finish() { throw e }   // the root cause, if it was the stream
            throw error
        }
        if let inflater, let e = inflater.finish() { throw e }
    }

    private func applyEntries(_ a: OpaquePointer, _ layer: LayerSource) throws(OCIError) {
        written.removeAll(keepingCapacity: true)
        dropCache()
        truncatedTail = false
        var entry: OpaquePointer?
        while true {
            let r = archive_read_next_header(a, &entry)
            if r == ARCHIVE_EOF { break }
            guard r == ARCHIVE_OK || r == ARCHIVE_WARN, let e = entry else {
                throw .unsafeLayer("\(layer.label): corrupt tar: \(Self.archiveError(a))")
            }
            stats.entries += 1
            if stats.entries > limits.maxEntries {
                throw .limitExceeded("more than \(limits.maxEntries) entries in the image layers")
            }
            defer { closeStale() }
            try applyEntry(a, e)
            if truncatedTail { break }
        }
        dropCache()
        closeStale()
    }

    /// Applies the recorded directory modes, owners and times (deepest first) and closes the root.
    public func finish() throws(OCIError) {
        guard !finished else { return }
        finished = true
        dropCache()
        closeStale()
        let ordered = dirMeta.keys.sorted { a, b in
            let da = a.utf8.reduce(0) { $0 + ($1 == 47 ? 1 : 0) }, db = b.utf8.reduce(0) { $0 + ($1 == 47 ? 1 : 0) }
            return da != db ? da > db : a > b
        }
        for path in ordered {
            guard let meta = dirMeta[path] else { continue }
            let comps = path.isEmpty ? [] : path.split(separator: "/").map(String.init)
            // Never follow anything here: a later layer may have turned a parent into a symlink.
            guard let r = try? resolve(comps[...], create: false, followSymlinks: false) else { continue }
            defer { close(r.fd) }
            if isRoot && (meta.uid != geteuid() || meta.gid != getegid()) { _ = fchown(r.fd, meta.uid, meta.gid) }
            _ = fchmod(r.fd, meta.mode)
            if let t = meta.mtime { var ts = [t, t]; _ = futimens(r.fd, &ts) }
        }
    }

    // MARK: Entries

    private func applyEntry(_ a: OpaquePointer, _ e: OpaquePointer) throws(OCIError) {
        guard let rawPath = archive_entry_pathname(e) else { throw .unsafeLayer("entry without a path") }
        let path = String(cString: rawPath)
        if limits.plainArchive && path.hasPrefix("/") { throw .unsafeLayer("absolute path \(path)") }
        let comps = try Self.safeComponents(path, limit: limits.maxPathBytes)
        let type = archive_entry_filetype(e)
        guard let name = comps.last else {
            // The root itself ("./"): keep its metadata.
            if type == S_IFDIR { dirMeta[""] = meta(e) }
            return
        }
        let parentComps = comps.dropLast()

        if name.hasPrefix(".wh.") && !limits.plainArchive {
            stats.whiteouts += 1
            try whiteout(name: name, parent: parentComps)
            return
        }

        let parent = try parentDir(parentComps)
        let full = parent.path.isEmpty ? name : parent.path + "/" + name
        written.insert(full)

        if let link = archive_entry_hardlink(e) {
            try hardlink(target: String(cString: link), parentFD: parent.fd, name: name, entryPath: path)
            return
        }
        switch type {
        case S_IFDIR:
            var st = stat()
            if fstatat(parent.fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 {
                if (st.st_mode & S_IFMT) != S_IFDIR {
                    try removeExisting(parent.fd, name, full)
                    try mkdirChecked(parent.fd, name, full)
                }
            } else {
                try mkdirChecked(parent.fd, name, full)
            }
            dirMeta[full] = meta(e)
        case S_IFREG:
            try regularFile(a, e, parentFD: parent.fd, name: name, full: full)
        case S_IFLNK:
            guard let target = archive_entry_symlink(e) else { throw .unsafeLayer("\(path): symlink without a target") }
            if limits.plainArchive { try Self.checkContained(symlink: String(cString: target), in: parentComps, entry: path) }
            try removeExisting(parent.fd, name, full)
            guard symlinkat(target, parent.fd, name) == 0 else { throw .io("symlink \(full): \(Self.err())") }
            if isRoot { _ = fchownat(parent.fd, name, uid_t(archive_entry_uid(e)), gid_t(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW) }
            if let t = mtime(e) { var ts = [t, t]; _ = utimensat(parent.fd, name, &ts, AT_SYMLINK_NOFOLLOW) }
        case S_IFIFO where limits.plainArchive, S_IFCHR where limits.plainArchive, S_IFBLK where limits.plainArchive:
            stats.skipped += 1
        case S_IFIFO:
            try removeExisting(parent.fd, name, full)
            guard mknodat(parent.fd, name, S_IFIFO | 0o600, 0) == 0 else { throw .io("mkfifo \(full): \(Self.err())") }
            try finishNode(parent.fd, name, e)
        case S_IFCHR, S_IFBLK:
            let major = UInt32(archive_entry_rdevmajor(e)), minor = UInt32(archive_entry_rdevminor(e))
            guard isRoot, type == S_IFCHR, Self.safeDevices.contains([major, minor]) else { stats.skipped += 1; return }
            try removeExisting(parent.fd, name, full)
            guard mknodat(parent.fd, name, type | 0o600, Self.makedev(major, minor)) == 0 else {
                throw .io("mknod \(full): \(Self.err())")
            }
            try finishNode(parent.fd, name, e)
        default:
            stats.skipped += 1   // sockets and anything unknown
        }
    }

    /// Character devices a rootfs may carry: mem 1:3,5,7,8,9 and tty 5:0,1,2.
    static let safeDevices: Set<[UInt32]> = [[1, 3], [1, 5], [1, 7], [1, 8], [1, 9], [5, 0], [5, 1], [5, 2]]

    static func makedev(_ major: UInt32, _ minor: UInt32) -> dev_t {
        let ma = UInt64(major), mi = UInt64(minor)
        return dev_t((mi & 0xff) | ((ma & 0xfff) << 8) | ((mi & ~0xff) << 12) | ((ma & ~0xfff) << 32))
    }

    private func regularFile(_ a: OpaquePointer, _ e: OpaquePointer, parentFD: Int32, name: String, full: String) throws(OCIError) {
        // The header's size is untrusted: bounded before use, and counted (checked) up front, so a
        // sparse or lying entry cannot make a file larger than the limit either.
        let size = Int64(archive_entry_size(e))
        guard size >= 0 else { throw .unsafeLayer("\(full): negative file size in the tar header") }
        guard size <= limits.maxBytes, let reserved = ByteMath.add(stats.bytes, size), reserved <= limits.maxBytes else {
            throw .limitExceeded("\(limits.plainArchive ? "the archive expands" : "image layers expand") to more than \(limits.maxBytes) bytes")
        }
        stats.bytes = reserved
        var fd = openat(parentFD, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 && errno == EEXIST {
            try removeExisting(parentFD, name, full)
            fd = openat(parentFD, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        }
        guard fd >= 0 else { throw .io("create \(full): \(Self.err())") }
        defer { close(fd) }
        var buf: UnsafeRawPointer?
        var len = 0
        var offset: la_int64_t = 0
        var end: Int64 = 0
        while true {
            let r = archive_read_data_block(a, &buf, &len, &offset)
            if r == ARCHIVE_EOF { break }
            guard r == ARCHIVE_OK || r == ARCHIVE_WARN else {
                // Some writers (umoci 0.4.7 `insert`) end the stream right after the last file's
                // data, without padding or trailer. Go's tar reader accepts that; so do we, but
                // only when the file is complete, and the layer then ends here.
                if end >= size && size >= 0 { truncatedTail = true; break }
                throw .unsafeLayer("\(full): corrupt data: \(Self.archiveError(a))")
            }
            guard len > 0, let base = buf else { continue }
            // Data only inside the declared size (already counted against the limit).
            guard offset >= 0, let blockEnd = ByteMath.add(Int64(offset), Int64(len)), blockEnd <= size else {
                throw .unsafeLayer("\(full): data beyond the size in its tar header")
            }
            var done = 0
            while done < len {
                let n = pwrite(fd, base + done, len - done, off_t(offset) + off_t(done))
                if n < 0 { if errno == EINTR { continue }; throw .io("write \(full): \(Self.err())") }
                done += n
            }
            end = max(end, blockEnd)
        }
        if end < size { guard ftruncate(fd, off_t(size)) == 0 else { throw .io("truncate \(full): \(Self.err())") } }
        if isRoot {
            let uid = uid_t(archive_entry_uid(e)), gid = gid_t(archive_entry_gid(e))
            if uid != geteuid() || gid != getegid() { _ = fchown(fd, uid, gid) }
        }
        _ = fchmod(fd, mode_t(archive_entry_perm(e)) & 0o7777)
        if let t = mtime(e) { var ts = [t, t]; _ = futimens(fd, &ts) }
    }

    private func finishNode(_ parentFD: Int32, _ name: String, _ e: OpaquePointer) throws(OCIError) {
        if isRoot { _ = fchownat(parentFD, name, uid_t(archive_entry_uid(e)), gid_t(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW) }
        _ = fchmodat(parentFD, name, mode_t(archive_entry_perm(e)) & 0o7777, 0)
        if let t = mtime(e) { var ts = [t, t]; _ = utimensat(parentFD, name, &ts, AT_SYMLINK_NOFOLLOW) }
    }

    private func hardlink(target: String, parentFD: Int32, name: String, entryPath: String) throws(OCIError) {
        let tcomps = try Self.safeComponents(target, limit: limits.maxPathBytes)
        guard let tname = tcomps.last else { throw .unsafeLayer("\(entryPath): hardlink to the root") }
        guard let tparent = try resolve(tcomps.dropLast(), create: false, followSymlinks: true) else {
            throw .unsafeLayer("\(entryPath): hardlink to \(target), which is not in the layers before it")
        }
        defer { close(tparent.fd) }
        var st = stat()
        guard fstatat(tparent.fd, tname, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
            throw .unsafeLayer("\(entryPath): hardlink to \(target), which is not in the layers before it")
        }
        guard (st.st_mode & S_IFMT) != S_IFDIR else { throw .unsafeLayer("\(entryPath): hardlink to directory \(target)") }
        var dst = stat()
        if fstatat(parentFD, name, &dst, AT_SYMLINK_NOFOLLOW) == 0 {
            if dst.st_ino == st.st_ino && dst.st_dev == st.st_dev { return }   // already that file
            try removeExisting(parentFD, name, entryPath)
        }
        guard linkat(tparent.fd, tname, parentFD, name, 0) == 0 else { throw .io("link \(entryPath) → \(target): \(Self.err())") }
    }

    private func whiteout(name: String, parent: ArraySlice<String>) throws(OCIError) {
        if name.hasPrefix(".wh..wh.") && name != ".wh..wh..opq" { return }   // aufs metadata
        guard let dir = try resolve(parent, create: false, followSymlinks: true) else { return }
        defer { close(dir.fd) }
        dropCache()
        if name == ".wh..wh..opq" {
            written.insert(dir.path)
            try removeUnwritten(dir.fd, dir.path)
            return
        }
        let victim = String(name.dropFirst(4))
        guard !victim.isEmpty, victim != ".", victim != ".." else { throw .unsafeLayer("whiteout \(name) names no file") }
        let full = dir.path.isEmpty ? victim : dir.path + "/" + victim
        if written.contains(full) { return }   // this layer made it: the whiteout is for lower layers
        try removeTree(dir.fd, victim, full)
    }

    /// Opaque directory: drop what lower layers put there, keep what this layer wrote.
    private func removeUnwritten(_ dirFD: Int32, _ dirPath: String) throws(OCIError) {
        for child in try Self.list(dirFD, dirPath) {
            let p = dirPath.isEmpty ? child : dirPath + "/" + child
            if !written.contains(p) { try removeTree(dirFD, child, p); continue }
            var st = stat()
            guard fstatat(dirFD, child, &st, AT_SYMLINK_NOFOLLOW) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
            let fd = openat(dirFD, child, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw .io("open \(p): \(Self.err())") }
            defer { close(fd) }
            try removeUnwritten(fd, p)
        }
    }

    // MARK: Paths

    /// A symlink in a user archive must resolve inside the tree: relative, and never above the root.
    static func checkContained(symlink target: String, in parent: ArraySlice<String>, entry: String) throws(OCIError) {
        guard !target.hasPrefix("/") else { throw .unsafeLayer("\(entry): symlink to an absolute path \(target)") }
        var depth = parent.count
        for c in target.split(separator: "/", omittingEmptySubsequences: true) {
            if c == "." { continue }
            if c == ".." { depth -= 1; if depth < 0 { throw .unsafeLayer("\(entry): symlink \(target) escapes the archive") } } else { depth += 1 }
        }
    }

    /// Splits an entry path into components, relative to the root: a leading `/` is dropped (as
    /// umoci writes the root entry, and as docker/containerd read such names); `..` is refused.
    static func safeComponents(_ path: String, limit: Int) throws(OCIError) -> [String] {
        guard path.utf8.count <= limit else { throw .limitExceeded("entry path longer than \(limit) bytes") }
        var out: [String] = []
        for c in path.split(separator: "/", omittingEmptySubsequences: true) {
            if c == "." { continue }
            if c == ".." { throw .unsafeLayer("path with .. \(path)") }
            out.append(String(c))
        }
        return out
    }

    private func parentDir(_ comps: ArraySlice<String>) throws(OCIError) -> (fd: Int32, path: String) {
        if let c = cache, c.key == comps { return (c.fd, c.path) }
        dropCache()
        guard let r = try resolve(comps, create: true, followSymlinks: true) else {
            throw .io("cannot create parent of \(comps.joined(separator: "/"))")
        }
        cache = (comps, r.fd, r.path)
        return r
    }

    /// Forgets the cached parent. Its fd may still be in use by the entry being applied, so it is
    /// closed after that entry (`closeStale`).
    private func dropCache() {
        if let c = cache { staleFDs.append(c.fd) }
        cache = nil
    }

    private func closeStale() {
        for fd in staleFDs { close(fd) }
        staleFDs.removeAll(keepingCapacity: true)
    }

    /// Opens the directory at `comps` under the root, one `O_NOFOLLOW` step at a time. Missing
    /// directories are created when `create`; parent symlinks are resolved inside the root when
    /// `followSymlinks`, else the walk gives up (nil). The caller owns the returned fd.
    private func resolve(_ comps: ArraySlice<String>, create: Bool, followSymlinks: Bool) throws(OCIError) -> (fd: Int32, path: String)? {
        var stack: [(fd: Int32, name: String)] = []
        var ok = false
        defer { if !ok { for s in stack { close(s.fd) } } }
        var pending = Array(comps.reversed())
        var links = 0
        while let c = pending.popLast() {
            if c.isEmpty || c == "." { continue }
            if c == ".." { if let last = stack.popLast() { close(last.fd) }; continue }
            let cur = stack.last?.fd ?? rootFD
            let fd = openat(cur, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd >= 0 {
                stack.append((fd, c))
                // Parents of what a layer writes count as written by it (opaque dirs keep them).
                if create { written.insert(stack.map(\.name).joined(separator: "/")) }
                continue
            }
            let e = errno
            let here = (stack.map(\.name) + [c]).joined(separator: "/")
            if e == ENOENT {
                guard create else { return nil }
                guard mkdirat(cur, c, 0o755) == 0 || errno == EEXIST else { throw .io("mkdir \(here): \(Self.err())") }
                written.insert(here)
                let nfd = openat(cur, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard nfd >= 0 else { throw .io("open \(here): \(Self.err())") }
                stack.append((nfd, c))
                continue
            }
            guard e == ELOOP || e == ENOTDIR else { throw .io("open \(here): \(String(cString: strerror(e)))") }
            var st = stat()
            guard fstatat(cur, c, &st, AT_SYMLINK_NOFOLLOW) == 0 else { throw .io("stat \(here): \(Self.err())") }
            guard (st.st_mode & S_IFMT) == S_IFLNK else {
                if !followSymlinks { return nil }
                throw .unsafeLayer("\(here) is not a directory but an entry is inside it")
            }
            guard followSymlinks else { return nil }
            links += 1
            guard links <= 40 else { throw .unsafeLayer("too many levels of symlinks at \(here)") }
            var buf = [CChar](repeating: 0, count: 4097)
            let n = readlinkat(cur, c, &buf, 4096)
            guard n >= 0 else { throw .io("readlink \(here): \(Self.err())") }
            let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if target.hasPrefix("/") { for s in stack { close(s.fd) }; stack.removeAll() }
            pending.append(contentsOf: target.split(separator: "/").map(String.init).reversed())
        }
        ok = true
        let path = stack.map(\.name).joined(separator: "/")
        if let top = stack.popLast() {
            for s in stack { close(s.fd) }
            return (top.fd, path)
        }
        let d = dup(rootFD)
        guard d >= 0 else { throw .io("dup: \(Self.err())") }
        return (d, "")
    }

    // MARK: Removal

    private func mkdirChecked(_ parentFD: Int32, _ name: String, _ full: String) throws(OCIError) {
        guard mkdirat(parentFD, name, 0o755) == 0 else { throw .io("mkdir \(full): \(Self.err())") }
    }

    /// Removes whatever is at `name` (a directory with its contents) so a new entry can take its place.
    private func removeExisting(_ parentFD: Int32, _ name: String, _ full: String) throws(OCIError) {
        var st = stat()
        guard fstatat(parentFD, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        // A removed directory or symlink may be on the cached parent's path: resolve afresh next time.
        if (st.st_mode & S_IFMT) != S_IFREG { dropCache() }
        try removeTree(parentFD, name, full)
    }

    private func removeTree(_ dirFD: Int32, _ name: String, _ full: String) throws(OCIError) {
        if unlinkat(dirFD, name, 0) == 0 { return }
        let e = errno
        if e == ENOENT { return }
        guard e == EISDIR || e == EPERM else { throw .io("remove \(full): \(String(cString: strerror(e)))") }
        let fd = openat(dirFD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .io("open \(full): \(Self.err())") }
        do {
            for child in try Self.list(fd, full) { try removeTree(fd, child, full + "/" + child) }
        } catch { close(fd); throw error }
        close(fd)
        guard unlinkat(dirFD, name, AT_REMOVEDIR) == 0 else { throw .io("rmdir \(full): \(Self.err())") }
    }

    /// Names in a directory (without `.` and `..`).
    static func list(_ dirFD: Int32, _ what: String) throws(OCIError) -> [String] {
        let d = dup(dirFD)
        guard d >= 0, let dir = fdopendir(d) else {
            if d >= 0 { close(d) }
            throw .io("opendir \(what): \(err())")
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: &ent.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    // MARK: Metadata helpers

    private func meta(_ e: OpaquePointer) -> DirMeta {
        DirMeta(mode: mode_t(archive_entry_perm(e)) & 0o7777, uid: uid_t(archive_entry_uid(e)),
                gid: gid_t(archive_entry_gid(e)), mtime: mtime(e))
    }

    private func mtime(_ e: OpaquePointer) -> timespec? {
        guard archive_entry_mtime_is_set(e) != 0 else { return nil }
        return timespec(tv_sec: archive_entry_mtime(e), tv_nsec: archive_entry_mtime_nsec(e))
    }

    static func err() -> String { String(cString: strerror(errno)) }

    static func archiveError(_ a: OpaquePointer) -> String {
        archive_error_string(a).map { String(cString: $0) } ?? "unknown libarchive error"
    }
}

/// Decompresses a gzip/zstd layer on its own thread (libarchive `raw` format) and writes the plain
/// tar into one end of a socket pair; `readFD` is the other end. `finish()` closes our end, waits
/// for the thread and returns its error, if any. Sends use MSG_NOSIGNAL: no SIGPIPE when the
/// reader stops early.
final class Inflater: @unchecked Sendable {
    let readFD: Int32
    private let writeFD: Int32
    private let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var error: OCIError?
    private var finished = false

    init?(path: String, label: String) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else { return nil }
        readFD = fds[0]
        writeFD = fds[1]
        var size: Int32 = 1 << 20
        _ = setsockopt(writeFD, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        let t = Thread { [self] in
            let e = self.pump(path, label: label)
            self.lock.lock(); self.error = e; self.lock.unlock()
            close(self.writeFD)
            self.done.signal()
        }
        t.stackSize = 1 << 20
        t.start()
    }

    private func pump(_ path: String, label: String) -> OCIError? {
        guard let a = archive_read_new() else { return .io("archive_read_new failed") }
        defer { archive_read_free(a) }
        archive_read_support_filter_gzip(a)
        archive_read_support_filter_zstd(a)
        archive_read_support_format_raw(a)
        guard archive_read_open_filename(a, path, 1 << 20) == ARCHIVE_OK else {
            return .io("cannot open layer \(path): \(LayerUnpacker.archiveError(a))")
        }
        var entry: OpaquePointer?
        guard archive_read_next_header(a, &entry) == ARCHIVE_OK else {
            return .unsafeLayer("\(label): not a compressed stream: \(LayerUnpacker.archiveError(a))")
        }
        var buf: UnsafeRawPointer?
        var len = 0
        var offset: la_int64_t = 0
        while true {
            let r = archive_read_data_block(a, &buf, &len, &offset)
            if r == ARCHIVE_EOF { return nil }
            guard r == ARCHIVE_OK || r == ARCHIVE_WARN else {
                return .unsafeLayer("\(label): corrupt compressed data: \(LayerUnpacker.archiveError(a))")
            }
            guard let base = buf else { continue }
            var sent = 0
            while sent < len {
                let n = send(writeFD, base + sent, len - sent, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return nil   // the reader stopped (it reports its own error, or it was done)
                }
                sent += n
            }
        }
    }

    /// Closes the reading end, waits for the thread, returns its error. Idempotent.
    @discardableResult
    func finish() -> OCIError? {
        lock.lock()
        let first = !finished
        finished = true
        lock.unlock()
        if first {
            close(readFD)
            done.wait()
        }
        lock.lock(); defer { lock.unlock() }
        return error
    }

    deinit { finish() }
}
