import Foundation
import AgentProtocol
import VMM

/// What an exec session hears from the agent.
enum AgentSessionEvent: Sendable {
    case output(fd: UInt8, bytes: [UInt8])
    case exit(ExitStatus)
}

/// The host end of one guest agent's link. A thread keeps it connected: connect (retrying while
/// the VMM or the agent is not up), `hello`, then read frames and route them to exec sessions and
/// pending requests by stream id. When the link breaks, every open session ends with exit 255
/// ("guest agent connection lost") and the thread reconnects until `close()`.
final class AgentLink: @unchecked Sendable {
    let instanceID: String
    let channel: AgentChannel
    private let onReady: @Sendable (HelloReply) -> Void
    private let log = Log("prov.agent")

    private let cond = NSCondition()                                            // guards the fields below
    private var fd: Int32 = -1
    private var ready = false
    private var closed = false
    private var nextStream: UInt32 = 1
    private var sessions: [UInt32: @Sendable (AgentSessionEvent) -> Void] = [:]
    private var pending: [UInt32: RequestResult?] = [:]
    private let writeLock = NSLock()

    init(instanceID: String, channel: AgentChannel, onReady: @escaping @Sendable (HelloReply) -> Void) {
        self.instanceID = instanceID
        self.channel = channel
        self.onReady = onReady
    }

    func start() {
        let t = Thread { [self] in run() }
        t.name = "agent-\(instanceID.prefix(8))"
        t.start()
    }

    /// Ends the link for good (stop, standby, delete): open sessions end, the thread exits.
    func close() {
        cond.lock()
        closed = true
        let f = fd
        cond.broadcast()
        cond.unlock()
        if f >= 0 { shutdown(f, Int32(SHUT_RDWR)) }
    }

    var isReady: Bool { cond.lock(); defer { cond.unlock() }; return ready }

    /// Waits until the agent has answered `hello` (true) or `timeout` seconds pass / the link is closed.
    func waitReady(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(max(0, timeout))
        cond.lock(); defer { cond.unlock() }
        while !ready && !closed {
            if !cond.wait(until: deadline) { break }
        }
        return ready
    }

    // MARK: sessions and requests

    struct NotReady: Error, CustomStringConvertible { var description: String }

    /// Starts an exec session; `events` gets output and then exactly one exit.
    func openSession(_ start: ExecStart, events: @escaping @Sendable (AgentSessionEvent) -> Void) throws -> UInt32 {
        cond.lock()
        guard ready, !closed else { cond.unlock(); throw NotReady(description: "the guest agent is not connected") }
        let stream = allocateStream()
        sessions[stream] = events
        cond.unlock()
        do { try send(Frame(.execStart, stream: stream, payload: start.encode())) } catch {
            cond.lock(); sessions[stream] = nil; cond.unlock()
            throw error
        }
        return stream
    }

    /// Forgets a session whose client went away (after asking the agent to kill it).
    func cancelSession(_ stream: UInt32) {
        cond.lock(); let live = sessions.removeValue(forKey: stream) != nil; cond.unlock()
        if live { try? send(Frame(.signal, stream: stream, payload: SignalRequest(signal: SIGKILL).encode())) }
    }

    /// Sends a mount/unmount request and waits for its `result`.
    func request(_ kind: FrameKind, payload: [UInt8], timeout: Double) throws -> RequestResult {
        cond.lock()
        guard ready, !closed else { cond.unlock(); throw NotReady(description: "the guest agent is not connected") }
        let stream = allocateStream()
        pending[stream] = .some(nil)
        cond.unlock()
        defer { cond.lock(); pending[stream] = nil; cond.unlock() }
        try send(Frame(kind, stream: stream, payload: payload))
        let deadline = Date().addingTimeInterval(timeout)
        cond.lock(); defer { cond.unlock() }
        while true {
            guard let slot = pending[stream] else { throw NotReady(description: "the guest agent connection was lost") }
            if let result = slot { return result }
            if !cond.wait(until: deadline) {
                throw NotReady(description: "the guest agent did not answer within \(Int(timeout)) s")
            }
        }
    }

    func send(_ frame: Frame) throws {
        cond.lock(); let f = fd; cond.unlock()
        guard f >= 0 else { throw NotReady(description: "the guest agent is not connected") }
        writeLock.lock(); defer { writeLock.unlock() }
        try AgentSocket.writeAll(f, frame.encoded())
    }

    private func allocateStream() -> UInt32 {
        // Called with `cond` held. Stream 0 is the link itself.
        repeat { nextStream = nextStream == UInt32.max ? 1 : nextStream + 1 } while sessions[nextStream] != nil || pending[nextStream] != nil
        return nextStream
    }

    // MARK: the link thread

    private func run() {
        var lastError = ""
        defer { _ = lastError }
        var attempts = 0
        while true {
            cond.lock(); let stop = closed; cond.unlock()
            if stop { return }
            let f: Int32
            do { f = try AgentSocket.connect(channel) } catch {
                let msg = "\(error)"
                if attempts == 300 { log.warning("guest agent still unreachable after about 2 minutes", ["instance_id": instanceID, "error": msg]) }
                lastError = msg
                attempts += 1
                cond.lock()
                if !closed { _ = cond.wait(until: Date().addingTimeInterval(attempts < 50 ? 0.1 : 0.5)) }
                cond.unlock()
                continue
            }
            cond.lock()
            if closed { cond.unlock(); Foundation.close(f); return }
            fd = f
            cond.unlock()
            let why = serve(f)
            cond.lock()
            fd = -1
            let wasReady = ready
            ready = false
            let orphans = sessions
            sessions.removeAll()
            pending.removeAll()
            let ending = closed
            cond.broadcast()
            cond.unlock()
            Foundation.close(f)
            for (_, events) in orphans { events(.exit(ExitStatus(code: 255, error: "guest agent connection lost"))) }
            if wasReady && !ending { log.warning("agent link lost; reconnecting", ["instance_id": instanceID, "reason": why]) }
            if ending { return }
            attempts = 1
            cond.lock()
            if !closed { _ = cond.wait(until: Date().addingTimeInterval(0.2)) }
            cond.unlock()
        }
    }

    /// Says hello and routes frames until the stream ends; returns why it ended.
    private func serve(_ f: Int32) -> String {
        do { try send(Frame(.hello, stream: 0, payload: HelloRequest().encode())) } catch { return "\(error)" }
        var decoder = FrameDecoder()
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            // Until the agent answers, hello is repeated every second: one sent while the guest
            // was not listening (booting, or a port still settling after a restore) can be lost.
            if !isReady {
                var pfd = pollfd(fd: f, events: Int16(POLLIN), revents: 0)
                let r = poll(&pfd, 1, 1000)
                if r == 0 {
                    do { try send(Frame(.hello, stream: 0, payload: HelloRequest().encode())) } catch { return "\(error)" }
                    continue
                }
                if r < 0 && errno == EINTR { continue }
            }
            let n = buf.withUnsafeMutableBytes { read(f, $0.baseAddress!, $0.count) }
            if n == 0 { return "the agent link closed" }
            if n < 0 {
                if errno == EINTR { continue }
                return String(cString: strerror(errno))
            }
            buf.withUnsafeBytes { decoder.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            do {
                while let frame = try decoder.next() { try handle(frame) }
            } catch {
                return "\(error)"
            }
        }
    }

    private func handle(_ frame: Frame) throws {
        switch frame.kind {
        case .hello:
            let reply = try HelloReply(decoding: frame.payload)
            guard reply.version == agentProtocolVersion else {
                throw NotReady(description: "guest agent speaks protocol \(reply.version), this host \(agentProtocolVersion)")
            }
            // Repeated hellos get repeated answers; only the first one counts.
            if isReady { return }
            // The callback (the store's Initializing → Running) runs before waiters are released,
            // so whoever waited sees the new state.
            onReady(reply)
            cond.lock(); ready = true; cond.broadcast(); cond.unlock()
            log.info("guest agent ready", ["instance_id": instanceID, "agent": reply.agent, "kernel": reply.kernel])
        case .output:
            let out = try Output(decoding: frame.payload)
            cond.lock(); let events = sessions[frame.stream]; cond.unlock()
            events?(.output(fd: out.fd, bytes: out.bytes))
        case .exit:
            let status = try ExitStatus(decoding: frame.payload)
            cond.lock(); let events = sessions.removeValue(forKey: frame.stream); cond.unlock()
            events?(.exit(status))
        case .result:
            let result = try RequestResult(decoding: frame.payload)
            cond.lock()
            if pending[frame.stream] != nil { pending[frame.stream] = .some(result) }
            cond.broadcast()
            cond.unlock()
        case .pong:
            break
        default:
            log.warning("unexpected frame from the guest agent", ["instance_id": instanceID, "kind": String(frame.kind.rawValue)])
        }
    }
}
