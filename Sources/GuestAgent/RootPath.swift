import Glibc

/// Resolves a path inside the app root as if the root were "/": symlinks are followed
/// component by component, absolute targets restart at the root and ".." stops at it, so no
/// link in the image can point a mount outside of it.
enum RootPath {
    static let maxLinks = 40

    /// The host path of `path` inside `root`. With `create`, missing directories are made (0755).
    /// The result must be a directory.
    static func resolve(_ path: String, in root: String, create: Bool) -> Result<String, PosixError> {
        var pending = path.split(separator: "/").map(String.init).reversed().map { $0 }
        var resolved: [String] = []
        var links = 0
        while let component = pending.popLast() {
            if component == "." { continue }
            if component == ".." { _ = resolved.popLast(); continue }
            let host = hostPath(root, resolved + [component])
            var st = stat()
            if lstat(host, &st) != 0 {
                let e = errno
                guard e == ENOENT && create else { return .failure(PosixError(e, path)) }
                if mkdir(host, 0o755) != 0 && errno != EEXIST { return .failure(PosixError(errno, "create \(host)")) }
                resolved.append(component)
                continue
            }
            if st.st_mode & S_IFMT == S_IFLNK {
                links += 1
                guard links <= maxLinks else { return .failure(PosixError(ELOOP, path)) }
                guard let target = readLink(host) else { return .failure(PosixError(errno, "readlink \(host)")) }
                if target.hasPrefix("/") { resolved = [] }
                pending += target.split(separator: "/").map(String.init).reversed()
                continue
            }
            guard st.st_mode & S_IFMT == S_IFDIR else { return .failure(PosixError(ENOTDIR, path)) }
            resolved.append(component)
        }
        return .success(hostPath(root, resolved))
    }

    private static func hostPath(_ root: String, _ components: [String]) -> String {
        let inner = components.joined(separator: "/")
        if root == "/" { return "/" + inner }
        return inner.isEmpty ? root : root + "/" + inner
    }

    private static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
