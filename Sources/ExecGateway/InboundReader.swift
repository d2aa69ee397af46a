/// Client frames off a connection: the socket's bytes through a `WebSocketParser`.
struct InboundReader {
    enum Next: Equatable {
        case message(WebSocketInbound)
        /// The client broke RFC 6455: fail the connection with this close code.
        case violation(WebSocketViolation)
        /// The client closed the socket (or it failed, or the server is stopping).
        case eof
        /// `ConnectionSocket.wake()` was called (the session exited).
        case woken
        case timeout
    }

    let socket: ConnectionSocket
    private var parser: WebSocketParser
    private var scratch: [UInt8] = []

    /// `pending`: bytes that arrived right behind the HTTP head.
    init(socket: ConnectionSocket, pending: ArraySlice<UInt8>, maxMessageSize: Int) {
        self.socket = socket
        parser = WebSocketParser(maxMessageSize: maxMessageSize)
        parser.feed(pending)
    }

    /// The next message or control frame, or why there is none before `deadline`.
    mutating func next(deadline: Double?) -> Next {
        while true {
            do {
                if let m = try parser.next() { return .message(m) }
            } catch {
                return .violation(error)
            }
            scratch.removeAll(keepingCapacity: true)
            switch socket.read(into: &scratch, deadline: deadline) {
            case .data: parser.feed(scratch[...])
            case .eof: return .eof
            case .woken: return .woken
            case .timeout: return .timeout
            }
        }
    }

    /// After the server sent its close frame: waits up to `seconds` for the client's close
    /// (answering pings, discarding data), so the client sees a clean closing handshake.
    mutating func awaitClientClose(seconds: Double) {
        let deadline = monotonicSeconds() + seconds
        while true {
            switch next(deadline: deadline) {
            case .message(.close), .eof, .timeout, .violation: return
            case .message, .woken: continue
            }
        }
    }
}
