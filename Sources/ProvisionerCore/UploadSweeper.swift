import Foundation
import Store
#if canImport(Glibc)
import Glibc
#endif

/// Removes staged volume uploads (`*.upload`, written by the FastCGI side) that a crash left
/// behind: files untouched for `maxAge` seconds that no queued or running job references. An
/// upload still being received keeps a fresh mtime, so it is never taken.
public struct UploadSweeper: Sendable {
    public let dir: String
    public let maxAge: Double
    let log = Log("prov.uploads")

    public init(dir: String, maxAge: Double) { self.dir = dir; self.maxAge = maxAge }

    /// One pass; returns the names removed.
    @discardableResult
    public func sweep(store: Store, now: Date = Date()) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        let candidates = names.filter { $0.hasSuffix(".upload") }
        guard !candidates.isEmpty else { return [] }
        guard let paths = try? store.pendingUploadPaths() else { return [] }
        let referenced = Set(paths.map { String($0.split(separator: "/").last ?? "") })
        let cutoff = now.timeIntervalSince1970 - maxAge
        var removed: [String] = []
        for name in candidates {
            let path = dir + "/" + name
            if referenced.contains(name) { continue }
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            guard Double(st.st_mtim.tv_sec) < cutoff else { continue }
            if unlink(path) == 0 { removed.append(name) }
        }
        if !removed.isEmpty {
            log.info("removed stale staged uploads", ["count": String(removed.count), "files": removed.joined(separator: ",")])
        }
        return removed
    }
}
