#if canImport(Glibc)
import Glibc
#endif

/// Starts `body` on a new pthread. Detached threads clean up after themselves; others must be
/// joined with `pthread_join`. Nil when the thread could not be created.
func spawnThread(detached: Bool, _ body: @escaping @Sendable () -> Void) -> pthread_t? {
    final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    defer { pthread_attr_destroy(&attr) }
    if detached { pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED)) }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, &attr, { raw in
        guard let raw else { return nil }
        Unmanaged<Box>.fromOpaque(raw).takeRetainedValue().body()
        return nil
    }, box)
    guard rc == 0 else {
        Unmanaged<Box>.fromOpaque(box).release()
        return nil
    }
    return tid
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// `strerror(errno)` as a String.
func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// A non-blocking, close-on-exec descriptor pair for waking a thread blocked in `poll`
/// (a socket pair: unlike `pipe2`, `socketpair` takes the flags in Swift's Glibc module).
func makeWakePair() -> (read: Int32, write: Int32)? {
    var fds: [Int32] = [-1, -1]
    let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
    guard socketpair(AF_UNIX, type, 0, &fds) == 0 else { return nil }
    return (fds[0], fds[1])
}

/// Writes `text` to stderr in one `write` (no buffering shared between threads).
func writeToStderr(_ text: String) {
    let bytes = Array(text.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        if n <= 0 { return }
        off += n
    }
}
