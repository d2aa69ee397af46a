import AgentProtocol
import Glibc

/// What a session produced.
struct SessionResult {
    var stdout: [UInt8] = []
    var stderr: [UInt8] = []
    var exit: ExitStatus?
    var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}

/// A test-side link: a blocking Unix socket (or a pty master) read only after poll() says so,
/// so every wait has a deadline. Session frames are collected per stream; other frames queue up in `replies`.
final class AgentClient {
    private var fd: Int32
    private var decoder = FrameDecoder()
    private(set) var sessions: [UInt32: SessionResult] = [:]
    private var replies: [Frame] = []
    private(set) var closedByAgent = false
    private var isSocket: Bool {
        var st = stat()
        return fstat(fd, &st) == 0 && st.st_mode & S_IFMT == S_IFSOCK
    }

    /// Speaks frames over an already open descriptor (a pty master standing in for a
    /// virtio-serial port); the client owns it from now on.
    init(descriptor: Int32) { fd = descriptor }

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AgentTestError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            fd = -1   // deinit runs for a throwing class init: it must not close the number again
            throw AgentTestError("connect \(path): \(String(cString: strerror(e)))")
        }
        var receiveTimeout = timeval(tv_sec: 0, tv_usec: 100_000)
        var sendTimeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &receiveTimeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &sendTimeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    func send(_ kind: FrameKind, stream: UInt32, _ payload: [UInt8] = []) throws {
        try sendRaw(Frame(kind, stream: stream, payload: payload).encoded())
    }

    func sendRaw(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                isSocket ? Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                         : Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw AgentTestError("send to the agent failed: \(String(cString: strerror(errno)))") }
            offset += n
        }
    }

    /// Reads what arrives until `done` holds or `seconds` pass; false on timeout.
    /// Throws when the agent closes the link while `done` does not hold yet.
    @discardableResult
    func pump(_ seconds: Double, until done: () -> Bool) throws -> Bool {
        let deadline = monotonicSeconds() + seconds
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !done() {
            guard monotonicSeconds() < deadline else { return false }
            guard !closedByAgent else { throw AgentTestError("the agent closed the link") }
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 100) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
            if n <= 0 { closedByAgent = true; continue }
            decoder.feed(Array(buffer[0..<n]))
            while let frame = try decoder.next() { absorb(frame) }
        }
        return true
    }

    private func absorb(_ frame: Frame) {
        switch frame.kind {
        case .output:
            guard let output = try? Output(decoding: frame.payload) else { return }
            if output.fd == 2 { sessions[frame.stream, default: .init()].stderr += output.bytes }
            else { sessions[frame.stream, default: .init()].stdout += output.bytes }
        case .exit:
            sessions[frame.stream, default: .init()].exit = try? ExitStatus(decoding: frame.payload)
        default:
            replies.append(frame)
        }
    }

    /// The next non-session frame of `kind` on `stream`.
    func reply(_ kind: FrameKind, stream: UInt32, within seconds: Double = 10) throws -> Frame {
        var found: Frame?
        try pump(seconds) {
            if let i = replies.firstIndex(where: { $0.kind == kind && $0.stream == stream }) { found = replies.remove(at: i) }
            return found != nil
        }
        guard let found else { throw AgentTestError("no \(kind) reply on stream \(stream) within \(seconds) s") }
        return found
    }

    func hello() throws -> HelloReply {
        try send(.hello, stream: 0, HelloRequest().encode())
        return try HelloReply(decoding: reply(.hello, stream: 0).payload)
    }

    func start(_ stream: UInt32, _ request: ExecStart) throws {
        try send(.execStart, stream: stream, request.encode())
    }

    /// Waits for the session's `exit` frame and returns everything it sent.
    func waitExit(_ stream: UInt32, within seconds: Double = 15) throws -> SessionResult {
        guard try pump(seconds, until: { sessions[stream]?.exit != nil }) else {
            throw AgentTestError("session \(stream) did not exit within \(seconds) s; output so far: \(sessions[stream]?.stdoutText ?? "")")
        }
        return sessions[stream]!
    }

    /// Waits until the session's stdout contains `text`.
    func waitOutput(_ stream: UInt32, containing text: String, within seconds: Double = 10) throws -> String {
        guard try pump(seconds, until: { sessions[stream]?.stdoutText.contains(text) == true }) else {
            throw AgentTestError("session \(stream) did not print \(text) within \(seconds) s; got: \(sessions[stream]?.stdoutText ?? "")")
        }
        return sessions[stream]!.stdoutText
    }

    /// Starts a session and waits for its end, optionally feeding stdin then closing it.
    func run(_ request: ExecStart, stream: UInt32 = 1, stdin: [UInt8]? = nil, within seconds: Double = 15) throws -> SessionResult {
        try start(stream, request)
        if let stdin {
            if !stdin.isEmpty { try send(.stdin, stream: stream, stdin) }
            try send(.stdinClose, stream: stream)
        }
        return try waitExit(stream, within: seconds)
    }

    /// Sends a mount/unmount request and returns the agent's answer.
    func request(_ kind: FrameKind, stream: UInt32, _ payload: [UInt8], within seconds: Double = 15) throws -> RequestResult {
        try send(kind, stream: stream, payload)
        return try RequestResult(decoding: reply(.result, stream: stream, within: seconds).payload)
    }

    /// True when the agent closes the link within `seconds`.
    func waitClosedByAgent(within seconds: Double) -> Bool {
        (try? pump(seconds) { closedByAgent }) == true || closedByAgent
    }
}
