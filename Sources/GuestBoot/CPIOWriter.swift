/// Writes a "newc" (SVR4, no CRC) cpio archive, the format the Linux kernel unpacks as an
/// initramfs. Entries are kept in insertion order (a directory must be added before what it
/// holds), every entry gets the same mtime and uid/gid 0, and inode numbers count up from 1, so
/// equal inputs give byte-identical archives.
public struct CPIOWriter: Sendable {
    private var bytes: [UInt8] = []
    private var names: Set<String> = []
    private var nextInode: UInt32 = 1
    private var finished = false
    public let mtime: UInt32

    public init(mtime: UInt32 = 0) {
        self.mtime = mtime
    }

    public var entryCount: Int { names.count }

    // File type bits (st_mode).
    static let typeDirectory: UInt32 = 0o040000
    static let typeRegular: UInt32 = 0o100000
    static let typeSymlink: UInt32 = 0o120000
    static let typeCharDevice: UInt32 = 0o020000

    public mutating func addDirectory(_ path: String, mode: UInt32 = 0o755) throws {
        try add(path, mode: CPIOWriter.typeDirectory | (mode & 0o7777), nlink: 2, data: [])
    }

    public mutating func addFile(_ path: String, contents: [UInt8], mode: UInt32 = 0o644) throws {
        try add(path, mode: CPIOWriter.typeRegular | (mode & 0o7777), nlink: 1, data: contents)
    }

    public mutating func addSymlink(_ path: String, target: String) throws {
        guard !target.isEmpty, !target.utf8.contains(0) else {
            throw GuestBootError.archive("symlink \(path) has an empty or NUL-containing target")
        }
        try add(path, mode: CPIOWriter.typeSymlink | 0o777, nlink: 1, data: Array(target.utf8))
    }

    public mutating func addCharacterDevice(_ path: String, major: UInt32, minor: UInt32, mode: UInt32 = 0o600) throws {
        try add(path, mode: CPIOWriter.typeCharDevice | (mode & 0o7777), nlink: 1, data: [], rdevMajor: major, rdevMinor: minor)
    }

    /// Appends the `TRAILER!!!` entry and returns the archive. Later `add…` calls throw.
    public mutating func finish() -> [UInt8] {
        if !finished {
            appendEntry(name: "TRAILER!!!", inode: 0, mode: 0, nlink: 1, data: [], rdevMajor: 0, rdevMinor: 0)
            finished = true
        }
        return bytes
    }

    /// Paths are relative (`bin/busybox`, no leading `/`), with no empty, `.` or `..` component.
    static func validate(_ path: String) throws {
        guard !path.isEmpty, !path.hasPrefix("/"), !path.hasSuffix("/"), !path.utf8.contains(0) else {
            throw GuestBootError.archive("invalid entry path '\(path)' (must be relative, without NUL or trailing /)")
        }
        for comp in path.split(separator: "/", omittingEmptySubsequences: false) where comp.isEmpty || comp == "." || comp == ".." {
            throw GuestBootError.archive("invalid entry path '\(path)' (empty, . or .. component)")
        }
    }

    private mutating func add(_ path: String, mode: UInt32, nlink: UInt32, data: [UInt8],
                              rdevMajor: UInt32 = 0, rdevMinor: UInt32 = 0) throws {
        guard !finished else { throw GuestBootError.archive("archive already finished; cannot add \(path)") }
        try CPIOWriter.validate(path)
        guard UInt64(data.count) <= UInt64(UInt32.max) else { throw GuestBootError.archive("\(path) is too large for newc") }
        guard !names.contains(path) else { throw GuestBootError.archive("duplicate entry \(path)") }
        if let slash = path.lastIndex(of: "/") {
            let parent = String(path[..<slash])
            guard names.contains(parent) else {
                throw GuestBootError.archive("\(path) added before its directory \(parent)")
            }
        }
        names.insert(path)
        appendEntry(name: path, inode: nextInode, mode: mode, nlink: nlink, data: data, rdevMajor: rdevMajor, rdevMinor: rdevMinor)
        nextInode += 1
    }

    private mutating func appendEntry(name: String, inode: UInt32, mode: UInt32, nlink: UInt32, data: [UInt8],
                                      rdevMajor: UInt32, rdevMinor: UInt32) {
        let nameBytes = Array(name.utf8) + [0]
        let fields: [UInt32] = [inode, mode, 0, 0, nlink, mtime, UInt32(data.count), 0, 0, rdevMajor, rdevMinor,
                                UInt32(nameBytes.count), 0]
        bytes.append(contentsOf: Array("070701".utf8))
        for f in fields { appendHex8(f) }
        bytes.append(contentsOf: nameBytes)
        pad4()
        bytes.append(contentsOf: data)
        pad4()
    }

    private mutating func appendHex8(_ v: UInt32) {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        for shift in stride(from: 28, through: 0, by: -4) {
            bytes.append(digits[Int((v >> UInt32(shift)) & 0xf)])
        }
    }

    private mutating func pad4() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }
}
