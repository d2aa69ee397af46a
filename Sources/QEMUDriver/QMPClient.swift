import Synchronization
import VMM

/// An asynchronous QMP notification (`{"event": …, "data": …, "timestamp": …}`).
public struct QMPEvent: Sendable, Equatable {
    /// Event name, e.g. `STOP`, `RESUME`, `SHUTDOWN`, `POWERDOWN`, `MIGRATION`, `DEVICE_DELETED`.
    public var name: String
    /// The `data` member (`.null` when absent).
    public var data: QMPJSON
    /// Seconds since the epoch, as QEMU stamped it.
    public var timestamp: Double

    public init(name: String, data: QMPJSON, timestamp: Double) {
        self.name = name; self.data = data; self.timestamp = timestamp
    }
}

/// Speaks QMP over one Unix-socket connection (QEMU serves one monitor client at a time, so there
/// is one client per socket). Negotiates capabilities on connect; `execute` matches replies by
/// `id`; events that arrive meanwhile are kept in a bounded buffer, apart from replies.
/// Blocking with deadlines (poll); every call holds the client's lock, so it is safe to share.
public final class QMPClient: Sendable {
    /// The QMP greeting's `QMP` member (`version`, `capabilities`).
    public let greeting: QMPJSON
    public let socketPath: String
    private let state: Mutex<State>

    /// At most this many unconsumed events are kept (oldest dropped first).
    public static let eventBufferLimit = 1024

    private struct State: ~Copyable {
        var socket: UnixSocket?
        var buffer: [UInt8] = []
        var events: [QMPEvent] = []
        var nextID: Int64 = 1
        var droppedEvents = 0
    }

    private init(path: String, socket: sending UnixSocket, greeting: QMPJSON, buffer: [UInt8]) {
        self.socketPath = path
        self.greeting = greeting
        self.state = Mutex(State(socket: socket, buffer: buffer))
    }

    /// Connects to the QMP socket at `path`, reads the greeting and leaves negotiation mode with
    /// `qmp_capabilities`. Fails with `.timeout` when no greeting arrives (for example while
    /// another client holds the monitor).
    public static func connect(path: String, timeout: Duration = .seconds(10)) throws(VMMError) -> QMPClient {
        let deadline = ContinuousClock.now + timeout
        let sock = try UnixSocket.connect(path: path)
        var buf: [UInt8] = []
        let first: QMPJSON
        do {
            guard let line = try readLine(sock, &buf, deadline: deadline) else {
                throw VMMError.transport("QMP socket \(path) closed before the greeting (another client may hold the monitor)")
            }
            first = try decodeLine(line)
        } catch let e as VMMError {
            sock.close()
            if case .timeout = e { throw .timeout("QMP greeting on \(path) (another client may hold the monitor)") }
            throw e
        } catch {
            sock.close()
            throw .decoding("QMP greeting: \(error)")
        }
        guard let qmp = first["QMP"] else {
            sock.close()
            throw .decoding("expected a QMP greeting, got \(first.jsonText)")
        }
        let client = QMPClient(path: path, socket: sock, greeting: qmp, buffer: buf)
        do {
            _ = try client.execute("qmp_capabilities", timeout: deadline - ContinuousClock.now)
        } catch {
            client.close()
            throw error
        }
        return client
    }

    /// Sends `{"execute": command, "arguments": arguments, "id": n}` and returns the `return`
    /// member of the reply with the same id. A QMP `error` reply becomes `.status` (see
    /// `QMPClient.status(forClass:)`) with `"<class>: <desc>"`; events read meanwhile are buffered.
    @discardableResult
    public func execute(_ command: String, _ arguments: QMPJSON? = nil,
                        timeout: Duration = .seconds(30)) throws(VMMError) -> QMPJSON {
        try execute(command, arguments, passing: nil, timeout: timeout)
    }

    /// `execute` that attaches the open file descriptor `fd` to the command (SCM_RIGHTS), as
    /// `getfd`/`add-fd` expect. The caller keeps ownership of `fd` (QEMU receives a duplicate).
    @discardableResult
    public func execute(_ command: String, _ arguments: QMPJSON?, passing fd: Int32?,
                        timeout: Duration = .seconds(30)) throws(VMMError) -> QMPJSON {
        let deadline = ContinuousClock.now + timeout
        return try state.withLock { (st: inout State) throws(VMMError) -> QMPJSON in
            guard let sock = st.socket else { throw .transport("QMP connection to \(socketPath) is closed") }
            let id = st.nextID
            st.nextID += 1
            var msg: [String: QMPJSON] = ["execute": .string(command), "id": .int(id)]
            if let arguments { msg["arguments"] = arguments }
            do throws(VMMError) {
                let bytes = Array((QMPJSON.object(msg).jsonText + "\n").utf8)
                if let fd { try sock.sendWithFD(bytes, fd: fd, deadline: deadline) } else { try sock.writeAll(bytes, deadline: deadline) }
            } catch {
                if case .transport = error { Self.drop(&st) }
                throw error
            }
            while true {
                let obj = try Self.nextMessage(&st, deadline: deadline, path: socketPath)
                if let ev = Self.event(from: obj) {
                    Self.keep(ev, in: &st)
                    continue
                }
                // A reply without an id answers a request QEMU could not parse: ours.
                if let rid = obj["id"], rid != .int(id) { continue }
                if let ret = obj["return"] { return ret }
                if let err = obj["error"] {
                    let cls = err["class"]?.stringValue ?? "GenericError"
                    let desc = err["desc"]?.stringValue ?? err.jsonText
                    throw .status(Self.status(forClass: cls), "\(cls): \(desc)")
                }
                throw .decoding("unexpected QMP message for \(command): \(obj.jsonText)")
            }
        }
    }

    /// Returns and forgets every buffered event, oldest first (no socket read).
    public func takeEvents() -> [QMPEvent] {
        state.withLock { st in
            let e = st.events
            st.events.removeAll()
            return e
        }
    }

    /// Reads from the socket for up to `duration` (or until QEMU closes it), buffering events;
    /// returns every buffered event (and forgets them).
    public func pollEvents(for duration: Duration) throws(VMMError) -> [QMPEvent] {
        let deadline = ContinuousClock.now + duration
        return try state.withLock { (st: inout State) throws(VMMError) -> [QMPEvent] in
            while st.socket != nil {
                do throws(VMMError) {
                    let obj = try Self.nextMessage(&st, deadline: deadline, path: socketPath)
                    if let ev = Self.event(from: obj) { Self.keep(ev, in: &st) }
                } catch {
                    // Deadline reached, or QEMU closed the connection (events read so far are kept).
                    if case .timeout = error { break }
                    if case .transport = error, st.socket == nil { break }
                    throw error
                }
            }
            let e = st.events
            st.events.removeAll()
            return e
        }
    }

    /// Waits up to `timeout` for an event for which `matches` is true, consuming it (and only it)
    /// from the buffer; earlier buffered events are searched first.
    public func waitForEvent(timeout: Duration, _ matches: (QMPEvent) -> Bool) throws(VMMError) -> QMPEvent {
        let deadline = ContinuousClock.now + timeout
        return try state.withLock { (st: inout State) throws(VMMError) -> QMPEvent in
            if let i = st.events.firstIndex(where: matches) { return st.events.remove(at: i) }
            while true {
                let obj: QMPJSON
                do throws(VMMError) {
                    obj = try Self.nextMessage(&st, deadline: deadline, path: socketPath)
                } catch {
                    if case .timeout = error { throw .timeout("waiting for a QMP event on \(socketPath)") }
                    throw error
                }
                guard let ev = Self.event(from: obj) else { continue }
                if matches(ev) { return ev }
                Self.keep(ev, in: &st)
            }
        }
    }

    /// True until the connection is closed by either side.
    public var isConnected: Bool { state.withLock { $0.socket != nil } }

    /// Closes the connection (QEMU then accepts a new monitor client).
    public func close() {
        state.withLock { st in Self.drop(&st) }
    }

    /// How a QMP error class maps onto the HTTP-like code of `VMMError.status`, so callers can treat
    /// both drivers alike: `CommandNotFound`/`DeviceNotFound` → 404, `DeviceNotActive` → 409,
    /// `KVMMissingCap` → 501, `GenericError` and anything else → 500.
    public static func status(forClass cls: String) -> Int {
        switch cls {
        case "CommandNotFound", "DeviceNotFound": return 404
        case "DeviceNotActive": return 409
        case "KVMMissingCap": return 501
        default: return 500
        }
    }

    // MARK: - Framing

    private static func drop(_ st: inout State) {
        st.socket?.close()
        st.socket = nil
    }

    private static func keep(_ ev: QMPEvent, in st: inout State) {
        st.events.append(ev)
        if st.events.count > eventBufferLimit {
            st.events.removeFirst(st.events.count - eventBufferLimit)
            st.droppedEvents += 1
        }
    }

    private static func event(from obj: QMPJSON) -> QMPEvent? {
        guard let name = obj["event"]?.stringValue else { return nil }
        var ts = 0.0
        if let t = obj["timestamp"] {
            let s = Double(t["seconds"]?.int64Value ?? 0)
            let us = Double(t["microseconds"]?.int64Value ?? 0)
            ts = s + us / 1e6
        }
        return QMPEvent(name: name, data: obj["data"] ?? .null, timestamp: ts)
    }

    /// Next complete JSON message; a closed connection is a transport error (and drops the socket).
    private static func nextMessage(_ st: inout State, deadline: ContinuousClock.Instant, path: String) throws(VMMError) -> QMPJSON {
        guard let sock = st.socket else { throw .transport("QMP connection to \(path) is closed") }
        let line: [UInt8]?
        do throws(VMMError) {
            line = try readLine(sock, &st.buffer, deadline: deadline)
        } catch {
            if case .transport = error { drop(&st) }
            throw error
        }
        guard let line else {
            drop(&st)
            throw .transport("QMP connection to \(path) closed by QEMU")
        }
        return try decodeLine(line)
    }

    /// One line (without its CR/LF), nil at EOF; skips blank lines.
    private static func readLine(_ sock: UnixSocket, _ buf: inout [UInt8], deadline: ContinuousClock.Instant) throws(VMMError) -> [UInt8]? {
        while true {
            if let nl = buf.firstIndex(of: UInt8(ascii: "\n")) {
                var line = Array(buf[..<nl])
                buf.removeSubrange(...nl)
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                if line.isEmpty { continue }
                return line
            }
            let more = try sock.readSome(deadline: deadline)
            if more.isEmpty { return nil }
            buf.append(contentsOf: more)
            if buf.count > 64 << 20 { throw .decoding("QMP message longer than 64 MiB") }
        }
    }

    private static func decodeLine(_ line: [UInt8]) throws(VMMError) -> QMPJSON {
        do {
            return try QMPJSON.parse(line)
        } catch {
            throw .decoding("QMP sent invalid JSON: \(String(decoding: line.prefix(200), as: UTF8.self))")
        }
    }
}
