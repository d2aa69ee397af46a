import Foundation
import Model
import Store
import AgentProtocol
import ExecGateway

/// Runs the exec gateway's sessions on the guest agents: instances are resolved in the store
/// (id, name, unique id prefix), sessions go over the instance's `AgentLink`.
public final class AgentExecBackend: ExecBackend, @unchecked Sendable {
    private let agents: AgentHub
    private let store: Store
    private let storeLock = NSLock()

    public init(agents: AgentHub, dbPath: String) throws {
        self.agents = agents
        self.store = try Store(path: dbPath)
    }

    public func resolve(_ ref: String) throws(ExecHTTPError) -> ExecTarget {
        storeLock.lock(); defer { storeLock.unlock() }
        let inst: InstanceRecord
        do { inst = try store.resolveInstance(ref).get() } catch let e as APIError {
            throw ExecHTTPError(status: e.status, code: e.code.rawValue, message: e.message)
        } catch {
            throw ExecHTTPError(status: 500, code: ErrorCode.internalError.rawValue, message: "instance lookup failed: \(error)")
        }
        if inst.skipGuestAgent {
            throw ExecHTTPError(status: 409, code: ErrorCode.invalidState.rawValue,
                                message: "instance \(inst.id) was created with skip_guest_agent: it has no guest agent, so exec is unavailable")
        }
        // Initializing: the VM is up and its agent about to answer; `open` waits for it.
        guard inst.state == .running || inst.state == .initializing else {
            throw ExecHTTPError(status: 409, code: ErrorCode.invalidState.rawValue,
                                message: "instance must be running (current state: \(inst.state.rawValue))")
        }
        return ExecTarget(instanceID: inst.id)
    }

    public func open(_ target: ExecTarget, start: ExecStart, waitForAgent: Double,
                     events: @escaping @Sendable (ExecEvent) -> Void) throws(ExecHTTPError) -> any ExecSessionHandle {
        guard let link = agents.link(target.instanceID) else {
            throw ExecHTTPError(status: 409, code: ErrorCode.invalidState.rawValue,
                                message: "instance \(target.instanceID) has no guest agent connection (is it running with the agent enabled?)")
        }
        guard link.waitReady(timeout: waitForAgent) else {
            throw ExecHTTPError(status: 409, code: ErrorCode.invalidState.rawValue,
                                message: "the guest agent of instance \(target.instanceID) did not answer within \(waitForAgent) s; retry with a larger wait_for_agent")
        }
        do {
            let stream = try link.openSession(start) { ev in
                switch ev {
                case .output(let fd, let bytes): events(.output(fd: fd, bytes: bytes))
                case .exit(let status): events(.exit(status))
                }
            }
            return AgentExecSession(link: link, stream: stream)
        } catch {
            throw ExecHTTPError(status: 409, code: ErrorCode.invalidState.rawValue, message: "cannot start the command: \(error)")
        }
    }
}

/// One exec session on an agent link (its frames carry `stream`).
final class AgentExecSession: ExecSessionHandle, @unchecked Sendable {
    let link: AgentLink
    let stream: UInt32

    init(link: AgentLink, stream: UInt32) { self.link = link; self.stream = stream }

    func sendStdin(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let end = min(bytes.count, off + Frame.maxPayload)
            try? link.send(Frame(.stdin, stream: stream, payload: Array(bytes[off..<end])))
            off = end
        }
    }

    func closeStdin() { try? link.send(Frame(.stdinClose, stream: stream)) }

    func resize(rows: UInt32, cols: UInt32) {
        try? link.send(Frame(.resize, stream: stream, payload: Resize(rows: rows, cols: cols).encode()))
    }

    func cancel() { link.cancelSession(stream) }

    func pauseOutput() { try? link.send(Frame(.pauseOutput, stream: stream)) }

    func resumeOutput() { try? link.send(Frame(.resumeOutput, stream: stream)) }
}
