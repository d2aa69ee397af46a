#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// One accepted connection's socket plus a wake-up pair, shared by the connection thread (which
/// reads) and the backend's event thread (which writes). Every write holds one lock, so frames
/// never interleave; the descriptors are closed under the same lock, so a late writer can never
/// hit a reused descriptor.
final class ConnectionSocket: Sendable {
    /// Read by the connection thread only, and only before `close()`.
    private let fd: Int32
    private let wakeRead: Int32
    private let state: Mutex<State>
    /// The wake-up pipe's write end (nil once closed), apart from `state`: waking must never wait
    /// behind a write blocked on a client that does not read.
    private let wakeWrite: Mutex<Int32?>

    private struct State {
        var open = true
        /// A close frame has been sent: RFC 6455 allows no more data frames after it.
        var closeSent = false
        /// A write failed or timed out; the client is treated as gone.
        var broken = false
    }

    /// How long one blocked write may wait for the client to read before it counts as gone.
    static let sendTimeoutSeconds = 30

    enum ReadResult: Equatable {
        case data(Int)
        case eof
        case woken
        case timeout
    }

    /// Takes ownership of `fd`. Nil when the wake-up pair cannot be created (fd is then closed).
    init?(fd: Int32) {
        guard let wake = makeWakePair() else { Glibc.close(fd); return nil }
        self.fd = fd
        wakeRead = wake.read
        state = Mutex(State())
        wakeWrite = Mutex(wake.write)
        var tv = timeval(tv_sec: Self.sendTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close() }

    /// Waits until bytes arrive (appended to `buffer`, up to `max`), the peer closes, `wake()` is
    /// called, or `deadline` (monotonic seconds) passes.
    func read(into buffer: inout [UInt8], max: Int = 64 * 1024, deadline: Double?) -> ReadResult {
        while true {
            var timeout: Int32 = -1
            if let deadline {
                let left = deadline - monotonicSeconds()
                if left <= 0 { return .timeout }
                timeout = Int32(min(left * 1000 + 1, 60_000))
            }
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, 2, timeout)
            if n < 0 {
                if errno == EINTR { continue }
                return .eof
            }
            if n == 0 { continue }
            if fds[1].revents != 0 {
                var drain = [UInt8](repeating: 0, count: 64)
                while Glibc.read(wakeRead, &drain, drain.count) > 0 {}
                return .woken
            }
            if fds[0].revents != 0 {
                let old = buffer.count
                buffer += [UInt8](repeating: 0, count: max)
                let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + old, max, 0) }
                if got > 0 {
                    buffer.removeLast(max - got)
                    return .data(got)
                }
                buffer.removeLast(max)
                if got < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                return .eof
            }
        }
    }

    /// Writes raw bytes (HTTP responses). False when the client is gone.
    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        state.withLock { s in writeLocked(&s, bytes) }
    }

    /// Sends one data or control frame; dropped (false) after a close frame was sent.
    @discardableResult
    func send(_ opcode: WebSocketOpcode, _ payload: [UInt8]) -> Bool {
        let frame = WebSocketFrame.encode(opcode, payload)
        return state.withLock { s in
            guard !s.closeSent else { return false }
            return writeLocked(&s, frame)
        }
    }

    /// Sends a sequence of frames without anything interleaving, the last one a close frame
    /// (`code`, `reason`). Does nothing if a close frame was already sent. Returns whether this
    /// call sent the close frame.
    @discardableResult
    func sendFinal(_ frames: [(WebSocketOpcode, [UInt8])], closeCode: UInt16, reason: String) -> Bool {
        var bytes: [UInt8] = []
        for (op, payload) in frames { bytes += WebSocketFrame.encode(op, payload) }
        bytes += WebSocketFrame.encode(.close, WebSocketFrame.closePayload(code: closeCode, reason: reason))
        return state.withLock { s in
            guard !s.closeSent else { return false }
            s.closeSent = true
            _ = writeLocked(&s, bytes)
            return true
        }
    }

    /// Answers the client's close frame with the same payload, unless a close frame was sent already.
    func echoClose(code: UInt16?) {
        let payload = code.map { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } ?? []
        state.withLock { s in
            guard !s.closeSent else { return }
            s.closeSent = true
            _ = writeLocked(&s, WebSocketFrame.encode(.close, payload))
        }
    }

    var closeSent: Bool { state.withLock { $0.closeSent } }

    /// Interrupts the connection thread's `read` (it returns `.woken`).
    func wake() {
        wakeWrite.withLock { w in
            guard let w else { return }
            var b: UInt8 = 1
            _ = Glibc.write(w, &b, 1)
        }
    }

    /// Shuts the socket down in both directions (server stop, or a client that stopped
    /// reading): the connection thread's `read` then returns `.eof`.
    func shutdownBoth() {
        state.withLock { s in
            guard s.open else { return }
            shutdown(fd, Int32(SHUT_RDWR))
        }
    }

    /// After a final HTTP response: shuts down the write side and discards what the client still
    /// sends until it closes or `lingerSeconds` pass, so it reads the response instead of a reset.
    func finishWriting(lingerSeconds: Double) {
        let open = state.withLock { s in
            if s.open { shutdown(fd, Int32(SHUT_WR)) }
            return s.open
        }
        guard open else { return }
        let deadline = monotonicSeconds() + lingerSeconds
        var sink: [UInt8] = []
        var discarded = 0
        while discarded < 1 << 20 {
            sink.removeAll(keepingCapacity: true)
            switch read(into: &sink, deadline: deadline) {
            case .data(let n): discarded += n
            case .woken: continue
            case .eof, .timeout: return
            }
        }
    }

    /// Closes the socket and the wake-up pair (idempotent).
    func close() {
        state.withLock { s in
            guard s.open else { return }
            s.open = false
            Glibc.close(fd)
            Glibc.close(wakeRead)
        }
        wakeWrite.withLock { w in
            if let fd = w { Glibc.close(fd) }
            w = nil
        }
    }

    private func writeLocked(_ s: inout State, _ bytes: [UInt8]) -> Bool {
        guard s.open, !s.broken else { return false }
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { off += n; continue }
            if n < 0 && errno == EINTR { continue }
            // EPIPE/ECONNRESET, or EAGAIN after SO_SNDTIMEO: the client is gone or stuck.
            s.broken = true
            shutdown(fd, Int32(SHUT_RDWR))
            return false
        }
        return true
    }
}
