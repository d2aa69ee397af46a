import AgentProtocol
import JSON
import Synchronization

/// One client connection, run on its own thread: the HTTP head, the route and the instance
/// lookup, the WebSocket handshake, then the exec session relay (client frames → the session
/// handle; backend events → an outbox the connection thread writes out, so a client that reads
/// slowly never holds up the backend's thread, which other sessions share).
final class ExecConnection: Sendable {
    let socket: ConnectionSocket
    private let backend: any ExecBackend
    private let slots: SessionSlots
    private let limits: ExecServer.Limits
    private let log: @Sendable (String) -> Void
    /// Set once the connection thread has written the exit out.
    private let exitStatus = Mutex<ExitStatus?>(nil)
    /// Events the backend delivered and the connection thread has not written yet.
    private let outbox = Mutex<Outbox>(Outbox())

    struct Outbox {
        var events: [ExecEvent] = []
        var bytes = 0
        /// More than `maxBacklog` bytes of output waited for a client that does not read.
        var overflowed = false
        /// The session (once `open` returned) and whether its output is paused.
        var handle: (any ExecSessionHandle)?
        var paused = false
    }

    /// Output waiting for the client above which the session's output is paused (flow control
    /// per session: the process blocks on its pipe, other sessions on the link go on), and
    /// below which it resumes.
    static let pauseBacklog = 4 << 20
    static let resumeBacklog = 1 << 20
    /// Output allowed to wait before the session is cancelled (a backend ignoring pauses).
    static let maxBacklog = 64 << 20

    init(socket: ConnectionSocket, backend: any ExecBackend, slots: SessionSlots, limits: ExecServer.Limits,
         log: @escaping @Sendable (String) -> Void) {
        self.socket = socket; self.backend = backend; self.slots = slots; self.limits = limits; self.log = log
    }

    /// Serves the connection to its end and closes the socket.
    func run() {
        defer { socket.close() }
        var buffer: [UInt8] = []
        let headDeadline = monotonicSeconds() + limits.headSeconds
        var headEnd = 0
        while true {
            if let end = HTTPRequestHead.endIndex(in: buffer), end <= HTTPRequestHead.maxSize { headEnd = end; break }
            if buffer.count >= HTTPRequestHead.maxSize {
                return refuse(.invalidRequest("request headers exceed \(HTTPRequestHead.maxSize / 1024) KiB"))
            }
            switch socket.read(into: &buffer, max: HTTPRequestHead.maxSize - buffer.count, deadline: headDeadline) {
            case .data, .woken: continue
            case .eof: return
            case .timeout:
                return refuse(.invalidRequest("request headers not received within \(secondsText(limits.headSeconds)) s"))
            }
        }

        let target: ExecTarget
        let key: String
        let subject: String
        do throws(ExecHTTPError) {
            let head = try HTTPRequestHead.parse(buffer[..<headEnd])
            // Set by nginx from the bearer token's `sub` ("-" for none) after checking it; a
            // client's own header of that name is replaced there. Without it nobody checked a
            // token (a local process on the socket): 401 before anything is looked up.
            guard let s = head.header("x-auth-subject"), !s.isEmpty else { throw ExecHTTPError.unauthorized }
            subject = s
            let ref = try ExecRoute.instanceRef(method: head.method, target: head.target)
            target = try backend.resolve(ref)
            key = try WebSocketHandshake.validate(head)
        } catch {
            return refuse(error)
        }
        guard slots.acquire() else { return refuse(.limitExceeded(slots.max)) }
        defer { slots.release() }
        guard socket.write(WebSocketHandshake.switchingProtocols(key: key)) else { return }
        var reader = InboundReader(socket: socket, pending: buffer[headEnd...], maxMessageSize: limits.maxMessageSize)
        relay(target, subject: subject, &reader)
    }

    /// Answers an HTTP error and lets the client read it before the socket closes.
    private func refuse(_ e: ExecHTTPError) {
        socket.write(HTTPResponse.error(e, extraHeaders: HTTPResponse.extraHeaders(for: e)))
        socket.finishWriting(lingerSeconds: limits.closeGraceSeconds)
    }

    /// The session: the first message, `open`, then stdin/resize until the exit or the client leaves.
    private func relay(_ target: ExecTarget, subject: String, _ reader: inout InboundReader) {
        let started = monotonicSeconds()
        var command = "-"
        var outcome = "no exec request"
        defer {
            log("instance=\(target.instanceID) subject=\(logField(subject.isEmpty ? "-" : subject)) command=\(logField(command)) "
                + "\(outcome) duration=\(formatSeconds(monotonicSeconds() - started))")
        }

        guard let first = awaitFirstMessage(&reader, outcome: &outcome) else { return }
        let request: ExecRequest
        do throws(ExecRequest.Invalid) {
            guard case .text(let text) = first else {
                throw ExecRequest.Invalid("the first message must be a text frame holding the JSON exec request (got a binary frame)")
            }
            request = try ExecRequest.parse(text)
        } catch {
            outcome = "rejected (\(error.message))"
            socket.sendFinal([(.text, JSON.serialize(.object(["error": .string(error.message)])))],
                             closeCode: WebSocketCloseCode.policyViolation, reason: "invalid exec request")
            reader.awaitClientClose(seconds: limits.closeGraceSeconds)
            return
        }
        command = request.start.command[0]

        let handle: any ExecSessionHandle
        do throws(ExecHTTPError) {
            handle = try backend.open(target, start: request.start, waitForAgent: request.waitForAgent) { [self] event in
                deliver(event)
            }
        } catch {
            outcome = "exit=127 error=\(error.code): \(error.message)"
            socket.sendFinal([(.binary, Array("Error: \(error.message)\r\n".utf8)), (.text, exitCodeMessage(127))],
                             closeCode: WebSocketCloseCode.normal, reason: "")
            reader.awaitClientClose(seconds: limits.closeGraceSeconds)
            return
        }
        outbox.withLock { $0.handle = handle }
        pump(handle, &reader, &outcome)
    }

    /// Client frames → the session until it exits (then up to the close grace for the client's
    /// close) or the client leaves (then the session is cancelled).
    private func pump(_ handle: any ExecSessionHandle, _ reader: inout InboundReader, _ outcome: inout String) {
        var closeDeadline: Double?
        while true {
            flushOutbox(handle)
            let exit = exitStatus.withLock { $0 }
            if let exit, closeDeadline == nil {
                outcome = Self.describe(exit)
                closeDeadline = monotonicSeconds() + limits.closeGraceSeconds
            }
            let running = exit == nil
            switch reader.next(deadline: closeDeadline) {
            case .message(.binary(let bytes)):
                if running { handle.sendStdin(bytes) }
            case .message(.text(let text)):
                guard running else { continue }
                if let size = ExecRequest.resize(text) {
                    handle.resize(rows: size.rows, cols: size.cols)
                } else {
                    handle.sendStdin(text)
                }
            case .message(.ping(let payload)):
                socket.send(.pong, payload)
            case .message(.pong):
                continue
            case .message(.close(let code, _)):
                endIfRunning(handle, &outcome, "client closed the WebSocket")
                socket.echoClose(code: code)
                return
            case .violation(let v):
                endIfRunning(handle, &outcome, "client protocol error: \(v.reason)")
                socket.sendFinal([], closeCode: v.code, reason: v.reason)
                return
            case .eof:
                endIfRunning(handle, &outcome, "client disconnected")
                return
            case .woken:
                continue
            case .timeout:
                return
            }
        }
    }

    /// The client is done: cancels the session unless it already exited, and records which happened.
    private func endIfRunning(_ handle: any ExecSessionHandle, _ outcome: inout String, _ why: String) {
        if let exit = exitStatus.withLock({ $0 }) {
            outcome = Self.describe(exit)
        } else {
            handle.cancel()
            outcome = "cancelled (\(why))"
        }
    }

    private static func describe(_ exit: ExitStatus) -> String {
        "exit=\(exit.code)" + (exit.error.isEmpty ? "" : " error=\(exit.error)")
    }

    /// Waits for the first data message, answering pings. Nil when the client left, broke the
    /// protocol, or sent nothing in time (each answered as the protocol requires).
    private func awaitFirstMessage(_ reader: inout InboundReader, outcome: inout String) -> WebSocketInbound? {
        let deadline = monotonicSeconds() + limits.firstMessageSeconds
        while true {
            switch reader.next(deadline: deadline) {
            case .message(.ping(let payload)):
                socket.send(.pong, payload)
            case .message(.pong), .woken:
                continue
            case .message(.close(let code, _)):
                socket.echoClose(code: code)
                outcome = "client closed before the exec request"
                return nil
            case .message(let m):
                return m
            case .violation(let v):
                outcome = "client protocol error: \(v.reason)"
                socket.sendFinal([], closeCode: v.code, reason: v.reason)
                return nil
            case .eof:
                outcome = "client disconnected before the exec request"
                return nil
            case .timeout:
                let message = "no exec request within \(secondsText(limits.firstMessageSeconds)) s: send the JSON request as the first message"
                outcome = "timed out waiting for the exec request"
                socket.sendFinal([(.text, JSON.serialize(.object(["error": .string(message)])))],
                                 closeCode: WebSocketCloseCode.policyViolation, reason: "no exec request")
                reader.awaitClientClose(seconds: limits.closeGraceSeconds)
                return nil
            }
        }
    }

    /// Backend events, on the backend's thread: queued, then the connection thread is woken.
    private func deliver(_ event: ExecEvent) {
        let (queued, pause) = outbox.withLock { o -> (Bool, (any ExecSessionHandle)?) in
            if o.overflowed { return (false, nil) }
            if case .output(_, let bytes) = event { o.bytes += bytes.count }
            o.events.append(event)
            if o.bytes > Self.maxBacklog { o.overflowed = true }
            guard o.bytes > Self.pauseBacklog, !o.paused, let h = o.handle else { return (true, nil) }
            o.paused = true
            return (true, h)
        }
        pause?.pauseOutput()
        if queued { socket.wake() }
    }

    /// On the connection thread: output as binary frames; the exit as an optional `Error:` line,
    /// `{"exitCode":N}` and a normal close. A client more than `maxBacklog` behind loses its
    /// session (cancelled, exit 255 with the reason).
    private func flushOutbox(_ handle: any ExecSessionHandle) {
        let (events, overflowed) = outbox.withLock { o -> ([ExecEvent], Bool) in
            defer { o.events.removeAll(); o.bytes = 0 }
            return (o.events, o.overflowed)
        }
        for event in events {
            switch event {
            case .output(_, let bytes):
                if !bytes.isEmpty { socket.send(.binary, bytes) }
            case .exit(let status):
                finish(status)
                return
            }
        }
        let resume = outbox.withLock { o -> Bool in
            guard o.paused, o.bytes < Self.resumeBacklog else { return false }
            o.paused = false
            return true
        }
        if resume { handle.resumeOutput() }
        if overflowed && exitStatus.withLock({ $0 }) == nil {
            handle.cancel()
            finish(ExitStatus(code: 255, error: "more than \(Self.maxBacklog >> 20) MiB of output waited for this client; "
                                  + "the session was cancelled (read the WebSocket faster)"))
        }
    }

    private func finish(_ status: ExitStatus) {
        var frames: [(WebSocketOpcode, [UInt8])] = []
        if !status.error.isEmpty { frames.append((.binary, Array("Error: \(status.error)\r\n".utf8))) }
        frames.append((.text, exitCodeMessage(status.code)))
        exitStatus.withLock { $0 = status }
        socket.sendFinal(frames, closeCode: WebSocketCloseCode.normal, reason: "")
    }

    private func exitCodeMessage(_ code: Int32) -> [UInt8] {
        JSON.serialize(.object(["exitCode": .int(Int64(code))]))
    }
}

/// `10` for 10.0, `0.5` for 0.5.
func secondsText(_ seconds: Double) -> String {
    seconds.rounded() == seconds && abs(seconds) < 1e9 ? String(Int(seconds)) : String(seconds)
}

/// `1.234s`.
func formatSeconds(_ seconds: Double) -> String {
    let ms = Int((max(0, seconds) * 1000).rounded())
    let frac = String(ms % 1000)
    return "\(ms / 1000).\(String(repeating: "0", count: 3 - frac.count))\(frac)s"
}

/// A value for a `key=value` log line: as is when it is one plain word, else a JSON string, so a
/// subject or command cannot forge other fields.
func logField(_ value: String) -> String {
    let plain = !value.isEmpty && value.utf8.allSatisfy { c in
        c > 0x20 && c < 0x7f && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\") && c != UInt8(ascii: "=")
    }
    return plain ? value : String(decoding: JSON.serialize(.string(value)), as: UTF8.self)
}
