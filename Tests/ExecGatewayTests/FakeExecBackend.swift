import AgentProtocol
import ExecGateway
import Foundation

/// An in-process `ExecBackend`: a resolve table and a few commands, each session on its own
/// thread. Records what the gateway asked for.
final class FakeExecBackend: ExecBackend, @unchecked Sendable {
    private let lock = NSLock()
    private var _resolved: [String] = []
    private var _opened: [(start: ExecStart, waitForAgent: Double)] = []
    private var _cancels = 0

    /// Refs `resolve` was called with (already URL-decoded by the gateway).
    var resolved: [String] { lock.withLock { _resolved } }
    var opened: [(start: ExecStart, waitForAgent: Double)] { lock.withLock { _opened } }
    var cancels: Int { lock.withLock { _cancels } }

    func resolve(_ ref: String) throws(ExecHTTPError) -> ExecTarget {
        lock.withLock { _resolved.append(ref) }
        switch ref {
        case "box", "my-box", "noagent":
            return ExecTarget(instanceID: "id-\(ref)")
        case "amb":
            throw ExecHTTPError(status: 409, code: "ambiguous", message: "instance reference amb matches 2 instances: use more of the id")
        case "stopped":
            throw ExecHTTPError(status: 409, code: "invalid_state", message: "instance must be running (current state: Stopped)")
        default:
            throw ExecHTTPError(status: 404, code: "not_found", message: "instance \(ref) not found")
        }
    }

    func open(_ target: ExecTarget, start: ExecStart, waitForAgent: Double,
              events: @escaping @Sendable (ExecEvent) -> Void) throws(ExecHTTPError) -> any ExecSessionHandle {
        lock.withLock { _opened.append((start, waitForAgent)) }
        if target.instanceID == "id-noagent" {
            throw ExecHTTPError(status: 503, code: "unavailable", message: "guest agent did not answer within 5 s")
        }
        return FakeSession(command: start.command, events: events) { [self] in lock.withLock { _cancels += 1 } }
    }
}

/// One fake command on its own thread.
///
/// - `echo ARGS…`: prints the args, exits 0.
/// - `cat`: echoes stdin; exits 0 on the text `EOF` (or stdin EOF).
/// - `fail`: never starts (error + 127).
/// - `sleep N`: exits 0 after N seconds.
/// - `resize`: prints `resize rows=R cols=C` per resize and `stdin: …` per input; exits on `EOF`.
/// - `stderr`: prints `oops` on fd 2, exits 3.
/// - anything else: not found (error + 127).
final class FakeSession: ExecSessionHandle, @unchecked Sendable {
    /// The longest single `events` call of each `flood` session (seconds): the gateway must
    /// never block the backend's thread on a slow client.
    static let floodLongestCall = LockedList<Double>()
    /// Pause/resume calls seen by `flood` sessions.
    static let flowControl = LockedList<String>()
    private var paused = false

    private enum Input { case stdin([UInt8]), closeStdin, resize(UInt32, UInt32) }

    private let cond = NSCondition()
    private var inputs: [Input] = []
    private var cancelled = false
    private var finished = false
    private let command: [String]
    private let events: @Sendable (ExecEvent) -> Void
    private let onCancel: @Sendable () -> Void

    init(command: [String], events: @escaping @Sendable (ExecEvent) -> Void, onCancel: @escaping @Sendable () -> Void) {
        self.command = command
        self.events = events
        self.onCancel = onCancel
        let t = Thread { [self] in
            run()
            cond.withLock { finished = true; cond.broadcast() }
        }
        t.start()
    }

    func sendStdin(_ bytes: [UInt8]) { push(.stdin(bytes)) }
    func closeStdin() { push(.closeStdin) }
    func resize(rows: UInt32, cols: UInt32) { push(.resize(rows, cols)) }
    func pauseOutput() { FakeSession.flowControl.append("pause"); cond.withLock { paused = true } }
    func resumeOutput() { FakeSession.flowControl.append("resume"); cond.withLock { paused = false; cond.broadcast() } }

    func cancel() {
        onCancel()
        cond.withLock {
            cancelled = true
            cond.broadcast()
            let deadline = Date().addingTimeInterval(10)
            while !finished && Date() < deadline { _ = cond.wait(until: deadline) }
        }
    }

    private func push(_ input: Input) {
        cond.withLock { inputs.append(input); cond.broadcast() }
    }

    /// The next input; nil once cancelled (or after 30 s of nothing, so a lost test ends).
    private func nextInput() -> Input? {
        cond.withLock {
            let deadline = Date().addingTimeInterval(30)
            while inputs.isEmpty && !cancelled && Date() < deadline { _ = cond.wait(until: deadline) }
            if cancelled || inputs.isEmpty { return nil }
            return inputs.removeFirst()
        }
    }

    private var isCancelled: Bool { cond.withLock { cancelled } }

    private func output(_ text: String, fd: UInt8 = 1) { events(.output(fd: fd, bytes: Array(text.utf8))) }
    private func exit(_ code: Int32, error: String = "") { events(.exit(ExitStatus(code: code, error: error))) }

    private func run() {
        let args = Array(command.dropFirst())
        switch command[0] {
        case "echo":
            output(args.joined(separator: " ") + "\n")
            exit(0)
        case "cat":
            while let input = nextInput() {
                switch input {
                case .stdin(let b) where b == Array("EOF".utf8): return exit(0)
                case .stdin(let b): events(.output(fd: 1, bytes: b))
                case .closeStdin: return exit(0)
                case .resize: continue
                }
            }
        case "fail":
            exit(127, error: "executable file not found in $PATH: fail")
        case "sleep":
            let seconds = Double(args.first ?? "1") ?? 1
            let done = cond.withLock {
                let deadline = Date().addingTimeInterval(seconds)
                while !cancelled && Date() < deadline { _ = cond.wait(until: deadline) }
                return !cancelled
            }
            if done { exit(0) }
        case "resize":
            while let input = nextInput() {
                switch input {
                case .stdin(let b) where b == Array("EOF".utf8): return exit(0)
                case .stdin(let b): output("stdin: " + String(decoding: b, as: UTF8.self) + "\n")
                case .closeStdin: return exit(0)
                case .resize(let r, let c): output("resize rows=\(r) cols=\(c)\n")
                }
            }
        case "stderr":
            output("oops\n", fd: 2)
            exit(3)
        case "flood":
            // N MiB as fast as the gateway takes it, honouring pauses, stopping when cancelled.
            let mib = Int(args.first ?? "1") ?? 1
            let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 64 << 10)
            var longest = 0.0
            for _ in 0..<(mib * 16) {
                let go = cond.withLock {
                    while paused && !cancelled { _ = cond.wait(until: Date().addingTimeInterval(30)) }
                    return !cancelled
                }
                guard go else { break }
                let t0 = Date()
                events(.output(fd: 1, bytes: chunk))
                longest = max(longest, Date().timeIntervalSince(t0))
            }
            FakeSession.floodLongestCall.append(longest)
            if !isCancelled { exit(0) }
        default:
            exit(127, error: "executable file not found in $PATH: \(command[0])")
        }
    }
}

final class LockedList<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func append(_ x: T) { lock.withLock { items.append(x) } }
    var all: [T] { lock.withLock { items } }
}
