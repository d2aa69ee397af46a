import AgentProtocol

/// The interface between the exec WebSocket gateway and whatever runs the commands (the
/// Provisioner's guest-agent links; a fake in tests). The gateway owns HTTP, WebSocket framing
/// and the JSON protocol; the backend owns instance lookup and the agent sessions.

/// A resolved, running instance an exec session may be opened on.
public struct ExecTarget: Sendable {
    /// The instance's full id (what `open` is called with and what the gateway logs).
    public var instanceID: String
    public init(instanceID: String) { self.instanceID = instanceID }
}

/// A failure the gateway answers with an HTTP status and a JSON `{"code", "message"}` body
/// (before the upgrade), or as an `Error: <message>` output line (from `open`).
public struct ExecHTTPError: Error, Sendable {
    /// HTTP status, e.g. 404, 409.
    public var status: Int
    /// The contract's error code, e.g. `not_found`, `ambiguous`, `invalid_state`.
    public var code: String
    /// A message the user can act on.
    public var message: String
    public init(status: Int, code: String, message: String) {
        self.status = status; self.code = code; self.message = message
    }
}

/// What a running session reports, in order.
public enum ExecEvent: Sendable {
    /// Bytes the process wrote (fd 1 = stdout, 2 = stderr); the gateway forwards both alike.
    case output(fd: UInt8, bytes: [UInt8])
    /// The session ended; always the last event. A non-empty `error` means the command never ran.
    case exit(ExitStatus)
}

/// One live session. The gateway calls these from its connection thread only.
public protocol ExecSessionHandle: AnyObject, Sendable {
    /// Bytes for the process's stdin (a tty session: its terminal input).
    func sendStdin(_ bytes: [UInt8])
    /// Closes the process's stdin (EOF).
    func closeStdin()
    /// Sets the terminal size of a tty session.
    func resize(rows: UInt32, cols: UInt32)
    /// The client went away: kill the process group; no more events after this returns.
    func cancel()
    /// The client is behind: stop producing output until `resumeOutput` (the process blocks on
    /// its full pipe). Called from the connection thread.
    func pauseOutput()
    func resumeOutput()
}

extension ExecSessionHandle {
    public func pauseOutput() {}
    public func resumeOutput() {}
}

/// Runs exec sessions for the gateway.
public protocol ExecBackend: Sendable {
    /// Before the upgrade: resolve id / name / unique id prefix (URL-decoded) and check the state.
    /// Throws 404 not_found, 409 ambiguous, 409 invalid_state ("instance must be running (current state: X)").
    func resolve(_ ref: String) throws(ExecHTTPError) -> ExecTarget
    /// After the first message: start the session. `events` is called from a backend thread, in
    /// order, ending with exactly one `.exit`. Throws a message when the agent can't be reached
    /// (the gateway then sends the `Error:` frame and exitCode 127).
    func open(_ target: ExecTarget, start: ExecStart, waitForAgent: Double,
              events: @escaping @Sendable (ExecEvent) -> Void) throws(ExecHTTPError) -> any ExecSessionHandle
}
