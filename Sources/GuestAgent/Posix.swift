import Glibc

/// Small wrappers over the syscalls the agent uses everywhere. Nothing here allocates after a
/// fork: the child side lives in `ChildProcess.swift`.

/// `strerror` text for an errno value, e.g. "No such file or directory".
func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

/// Milliseconds on the monotonic clock (deadlines and timeouts).
func monotonicMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// Makes `fd` non-blocking and close-on-exec (sessions must not inherit the agent's fds).
func makeNonBlockingCloseOnExec(_ fd: Int32) {
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
}

/// A pipe with both ends close-on-exec (pipe2 is not in the Glibc module; the agent is
/// single-threaded, so no fork can slip in between pipe and fcntl).
func makePipe() -> (read: Int32, write: Int32)? {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { return nil }
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
    return (fds[0], fds[1])
}

/// Closes `fd` if it is open and sets it to -1.
func closeAndForget(_ fd: inout Int32) {
    if fd >= 0 { close(fd) }
    fd = -1
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if not), so pipes created later never land
/// on them and `dup2` in a child always moves a descriptor.
func ensureStandardDescriptors() {
    for fd: Int32 in 0...2 where fcntl(fd, F_GETFD) == -1 {
        _ = open("/dev/null", O_RDWR)
    }
}

/// The whole file (up to `limit` bytes), nil if it cannot be opened.
func readFileBytes(_ path: String, limit: Int = 1 << 20) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while out.count < limit {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        out += chunk[0..<n]
    }
    return out
}

/// The file as text without trailing whitespace, nil if it cannot be read.
func readTrimmedLine(_ path: String) -> String? {
    guard let bytes = readFileBytes(path, limit: 4096) else { return nil }
    var text = String(decoding: bytes, as: UTF8.self)
    while let last = text.last, last.isWhitespace { text.removeLast() }
    return text
}

/// Names in a directory (without "." and ".."), empty if it cannot be read.
func directoryEntries(_ path: String) -> [String] {
    guard let dir = opendir(path) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

/// File type bits of `path` without following a final symlink; nil with errno set if missing.
func fileType(_ path: String, followLinks: Bool = false) -> mode_t? {
    var st = stat()
    let rc = followLinks ? stat(path, &st) : lstat(path, &st)
    return rc == 0 ? st.st_mode & S_IFMT : nil
}

/// `mkdir -p`: creates `path` and its missing parents with mode 0755. Returns errno on failure.
func makeDirectories(_ path: String) -> Int32? {
    var prefix = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        prefix += "/" + component
        if mkdir(prefix, 0o755) != 0 && errno != EEXIST { return errno }
    }
    return fileType(path, followLinks: true) == S_IFDIR ? nil : ENOTDIR
}

/// The kernel release (`uname -r`).
func kernelRelease() -> String {
    var names = utsname()
    guard uname(&names) == 0 else { return "unknown" }
    return withUnsafeBytes(of: &names.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
}

/// How a wait status ended: the exit code, or 128 + the signal number.
func codeFromWaitStatus(_ status: Int32) -> Int32 {
    let signal = status & 0x7f
    return signal == 0 ? (status >> 8) & 0xff : 128 + signal
}

/// Marks every descriptor above 2 that the agent inherited close-on-exec, so sessions never hold
/// them (a leaked pipe end would keep whoever started the agent waiting for EOF until the
/// session's process exits). The agent's own descriptors are created close-on-exec.
func closeInheritedDescriptorsOnExec() {
    var fds: [Int32] = []
    if let dir = opendir("/proc/self/fd") {
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if let fd = Int32(name), fd > 2 { fds.append(fd) }
        }
        closedir(dir)   // its own descriptor is in the list; fcntl on it then just fails
    } else {
        fds = Array(3..<1024)
    }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
}
