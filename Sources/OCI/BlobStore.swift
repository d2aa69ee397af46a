import Digest
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Content-addressed blob cache: `<root>/blobs/sha256/<hex>`. A blob appears only complete and
/// verified (temp file, fsync, rename). One writer per digest at a time in this process: concurrent
/// pulls of the same blob wait for the first and then find it present.
public final class BlobStore: Sendable {
    public let root: String
    public let blobDir: String
    private let inflight = KeyedLocks()

    public init(root: String) throws(OCIError) {
        self.root = root
        self.blobDir = root + "/blobs/sha256"
        do {
            try FileManager.default.createDirectory(atPath: blobDir, withIntermediateDirectories: true)
        } catch {
            throw .io("cannot create blob cache \(blobDir): \(error.localizedDescription)")
        }
    }

    /// `sha256:<64 lowercase hex>` → hex; anything else is refused (it becomes a path).
    public static func hex(of digest: String) throws(OCIError) -> String {
        guard digest.hasPrefix("sha256:") else { throw .unsupportedMediaType("digest algorithm of \(digest) (only sha256)") }
        let hex = String(digest.dropFirst(7))
        guard hex.utf8.count == 64, hex.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
            throw .invalidResponse("malformed digest \(digest)")
        }
        return hex
    }

    public func path(for digest: String) throws(OCIError) -> String {
        blobDir + "/" + (try Self.hex(of: digest))
    }

    public func contains(_ digest: String) -> Bool {
        guard let p = try? path(for: digest) else { return false }
        var st = stat()
        return lstat(p, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// Size of a present blob, nil if absent.
    public func size(of digest: String) -> Int64? {
        guard let p = try? path(for: digest) else { return nil }
        var st = stat()
        guard lstat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int64(st.st_size)
    }

    public func read(_ digest: String, limit: Int = 8 << 20) throws(OCIError) -> [UInt8] {
        let p = try path(for: digest)
        guard let size = size(of: digest) else { throw .io("blob \(digest) is not in the cache") }
        guard size <= Int64(limit) else { throw .limitExceeded("blob \(digest) is \(size) bytes (limit \(limit))") }
        guard let data = FileManager.default.contents(atPath: p) else { throw .io("cannot read \(p)") }
        return Array(data)
    }

    /// Runs `produce` under the per-digest lock unless the blob is already present. Returns whether
    /// `produce` ran (false: it was cached, possibly by a concurrent pull that just finished).
    @discardableResult
    public func ensure(_ digest: String, produce: () throws(OCIError) -> Void) throws(OCIError) -> Bool {
        let hex = try Self.hex(of: digest)
        if contains(digest) { return false }
        inflight.acquire(hex)
        defer { inflight.release(hex) }
        if contains(digest) { return false }
        try produce()
        guard contains(digest) else { throw .io("blob \(digest) was not stored") }
        return true
    }

    /// Stores bytes already in memory (manifests, configs) after checking their digest.
    public func put(_ bytes: [UInt8], digest: String) throws(OCIError) {
        try ensure(digest) { () throws(OCIError) in
            let tmp = try makeTemp(for: digest)
            var ok = false
            defer { if !ok { tmp.discard() } }
            tmp.hasher.update(bytes)
            let written = bytes.withUnsafeBytes { raw -> Bool in
                var off = 0
                while off < raw.count {
                    guard let base = raw.baseAddress else { return false }
                    let n = write(tmp.fd, base + off, raw.count - off)
                    if n < 0 { if errno == EINTR { continue }; return false }
                    off += n
                }
                return true
            }
            guard written else { throw .io("writing \(tmp.path): \(String(cString: strerror(errno)))") }
            try commit(tmp, digest: digest, size: Int64(bytes.count))
            ok = true
        }
    }

    /// A temp file in the cache directory, with a hasher to feed while writing.
    public func makeTemp(for digest: String) throws(OCIError) -> TempBlob {
        let hex = try Self.hex(of: digest)
        let name = ".tmp-\(hex.prefix(16))-\(Hex.encode(Digests.randomBytes(6)))"
        let path = blobDir + "/" + name
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io("cannot create \(path): \(String(cString: strerror(errno)))") }
        return TempBlob(path: path, fd: fd)
    }

    /// Verifies the hash and size of a fully written temp blob, then fsyncs and renames it into
    /// place. On mismatch the temp file is removed and `.digestMismatch` thrown.
    public func commit(_ tmp: TempBlob, digest: String, size: Int64?) throws(OCIError) {
        let dest = try path(for: digest)
        let actual = "sha256:" + tmp.hasher.finishHex()
        guard actual == digest else { tmp.discard(); throw .digestMismatch(expected: digest, actual: actual) }
        var st = stat()
        guard fstat(tmp.fd, &st) == 0 else { tmp.discard(); throw .io("stat \(tmp.path) failed") }
        if let size, Int64(st.st_size) != size {
            tmp.discard()
            throw .invalidResponse("blob \(digest) is \(st.st_size) bytes, the descriptor says \(size)")
        }
        guard fsync(tmp.fd) == 0 else { tmp.discard(); throw .io("fsync \(tmp.path): \(String(cString: strerror(errno)))") }
        close(tmp.fd)
        guard rename(tmp.path, dest) == 0 else {
            let e = errno
            unlink(tmp.path)
            throw .io("rename into \(dest): \(String(cString: strerror(e)))")
        }
        let dfd = open(blobDir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// Digests of all blobs present (temp files excluded).
    public func allDigests() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: blobDir)) ?? []
        return names.filter { !$0.hasPrefix(".") }.map { "sha256:" + $0 }
    }

    /// Removes a blob unless a pull is writing it right now. Returns whether it was removed.
    @discardableResult
    public func remove(_ digest: String) -> Bool {
        guard let hex = try? Self.hex(of: digest) else { return false }
        guard inflight.tryAcquire(hex) else { return false }
        defer { inflight.release(hex) }
        return unlink(blobDir + "/" + hex) == 0
    }

    /// Removes leftover temp files (call when no pull is running).
    public func removeTemps() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: blobDir)) ?? []
        for n in names where n.hasPrefix(".tmp-") { unlink(blobDir + "/" + n) }
    }
}

/// A blob being written: its file descriptor, path and running hash. Not shared between threads.
public final class TempBlob {
    public let path: String
    public let fd: Int32
    public let hasher = SHA256Hasher()

    init(path: String, fd: Int32) { self.path = path; self.fd = fd }

    /// Closes and deletes the temp file.
    public func discard() {
        close(fd)
        unlink(path)
    }
}

/// Per-key exclusive locks with waiting (blobs being fetched, digests being built).
/// `NSCondition` guards the set.
public final class KeyedLocks: @unchecked Sendable {
    private let cond = NSCondition()
    private var busy: Set<String> = []

    public init() {}

    public func acquire(_ key: String) {
        cond.lock()
        while busy.contains(key) { cond.wait() }
        busy.insert(key)
        cond.unlock()
    }

    public func tryAcquire(_ key: String) -> Bool {
        cond.lock(); defer { cond.unlock() }
        return busy.insert(key).inserted
    }

    public func release(_ key: String) {
        cond.lock()
        busy.remove(key)
        cond.broadcast()
        cond.unlock()
    }
}
