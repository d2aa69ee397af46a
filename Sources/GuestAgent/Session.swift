import Glibc

/// One running command on a link: its process group, its stdio descriptors and what is still
/// owed to the host before the final `exit` frame.
final class Session {
    let stream: UInt32
    /// The child's pid, which is also its process group and session id (setsid).
    let pid: pid_t
    let argv0: String
    /// The pty master of a tty session, -1 otherwise. Shared by `output` and `input`.
    let master: Int32
    /// stdout pipe or the pty master while it has not hit EOF; -1 after.
    var output: Int32
    /// stderr pipe while open; always -1 for a tty session.
    var errorOutput: Int32
    /// stdin pipe or the pty master while the host may still write; -1 after.
    var input: Int32
    var pendingInput = ByteQueue()
    /// The host sent `stdinClose`: close stdin once `pendingInput` is written.
    var inputCloseRequested = false
    /// When the process group gets SIGKILL and the exit code becomes 124 (monotonic ms).
    var timeoutAt: Int64?
    var timedOut = false
    /// The host's reader is behind (`pauseOutput`): the output fds are not read until `resumeOutput`.
    var outputPaused = false
    /// The wait status once the child was reaped.
    var waitStatus: Int32?
    var reapedAt: Int64 = 0

    init(stream: UInt32, pid: pid_t, argv0: String, master: Int32, output: Int32, errorOutput: Int32, input: Int32) {
        self.stream = stream; self.pid = pid; self.argv0 = argv0; self.master = master
        self.output = output; self.errorOutput = errorOutput; self.input = input
    }

    var isTTY: Bool { master >= 0 }
    var outputOpen: Bool { output >= 0 || errorOutput >= 0 }
    var reaped: Bool { waitStatus != nil }

    /// The code the host sees: 124 after a timeout, else the exit status or 128 + signal.
    var exitCode: Int32 { timedOut ? 124 : codeFromWaitStatus(waitStatus ?? 0) }

    /// Sends `signal` to the whole process group (it outlives the leader while members remain).
    func signalGroup(_ signal: Int32) { _ = kill(-pid, signal) }

    /// stdout/stderr reached EOF (the pty master stays open for resizes until `closeAll`).
    func closeOutput(_ fd: UInt8) {
        if fd == 2 { closeAndForget(&errorOutput) } else if isTTY { output = -1 } else { closeAndForget(&output) }
    }

    /// No more writes to stdin (the host closed it, or the child stopped reading).
    func closeInput() {
        pendingInput.removeAll()
        if isTTY { input = -1 } else { closeAndForget(&input) }
    }

    func closeAll() {
        closeOutput(1); closeOutput(2); closeInput()
        if master >= 0 { close(master) }
    }
}
