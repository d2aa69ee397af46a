import Foundation
import Model
#if canImport(Glibc)
import Glibc
#endif

/// Rotation of one log source's files (`<source>.log`, `.log.1` … `.log.<files-1>`) on plain
/// files. Two ways, for the two kinds of writer:
/// - `renameLive`: for a writer of our own that opens the file per write (`hypeman.log`): the
///   live file is renamed to `.1` and the next write creates a fresh one.
/// - `copyTruncate`: for a VMM that keeps the file open with `O_APPEND` (`app.log`, `vmm.log`):
///   the content is copied to `.1` (through a temporary file renamed into place, so a reader
///   never sees a half-written `.1`), then the live file is truncated; the VMM's next write lands
///   at offset 0. Bytes written between the last copy pass and the truncation are lost, a window
///   of microseconds.
/// In both cases older files shift up by one and the oldest beyond `files - 1` is dropped.
public enum LogRotation {
    /// Shifts `.k` → `.k+1` for k = files-2 … 1, dropping `.files-1`.
    static func shift(_ source: GuestLogSource, in dir: String, files: Int) {
        let keep = files - 1
        guard keep >= 1 else { return }
        unlink(GuestLogFiles.rotated(source, keep, in: dir))
        var k = keep - 1
        while k >= 1 {
            rename(GuestLogFiles.rotated(source, k, in: dir), GuestLogFiles.rotated(source, k + 1, in: dir))
            k -= 1
        }
    }

    /// Rotates by renaming the live file to `.1` (or removing it when only one file is kept).
    public static func renameLive(_ source: GuestLogSource, in dir: String, files: Int) {
        let live = GuestLogFiles.live(source, in: dir)
        if files <= 1 { unlink(live); return }
        shift(source, in: dir, files: files)
        rename(live, GuestLogFiles.rotated(source, 1, in: dir))
    }

    /// Rotates a file another process appends to: copy to `.1`, truncate the live file. Returns
    /// the number of bytes moved out of the live file (0 when it did not exist).
    @discardableResult
    public static func copyTruncate(_ source: GuestLogSource, in dir: String, files: Int,
                                    keepAtMost: Int64 = .max) throws -> Int64 {
        let live = GuestLogFiles.live(source, in: dir)
        let fd = open(live, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        guard files > 1 else {
            var st = stat()
            let n = fstat(fd, &st) == 0 ? Int64(st.st_size) : 0
            ftruncate(fd, 0)
            return n
        }
        let tmp = "\(dir)/.\(source.rawValue).log.rotating"
        let out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard out >= 0 else { throw RotationError("cannot create \(tmp): errno \(errno)") }
        // A file found past the cap (the watcher was late) keeps only its newest `keepAtMost` bytes.
        var st0 = stat()
        let size0 = fstat(fd, &st0) == 0 ? Int64(st0.st_size) : 0
        let from = max(0, size0 - keepAtMost)
        var copied: Int64 = from
        var buf = [UInt8](repeating: 0, count: 256 * 1024)
        // Copy until the end; a second pass picks up what the writer added meanwhile.
        var ok = true
        while ok {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, off_t(copied)) }
            if n < 0 { ok = false; break }
            if n == 0 { break }
            var w = 0
            while w < n {
                let m = buf.withUnsafeBytes { write(out, $0.baseAddress! + w, n - w) }
                if m <= 0 { ok = false; break }
                w += m
            }
            copied += Int64(n)
        }
        close(out)
        guard ok else { unlink(tmp); throw RotationError("copying \(live) failed: errno \(errno)") }
        shift(source, in: dir, files: files)
        rename(tmp, GuestLogFiles.rotated(source, 1, in: dir))
        // The last bytes the writer added after the final read are lost with the truncation.
        ftruncate(fd, 0)
        return copied - from
    }

    /// The size of a file, or nil when it does not exist.
    public static func size(_ path: String) -> Int64? {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : nil
    }
}

/// A rotation that could not be done (the live file is left as it was).
public struct RotationError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}
