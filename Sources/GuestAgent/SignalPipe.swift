import Glibc

/// Write end of the self-pipe, for the signal handlers (set once before they are installed).
nonisolated(unsafe) private var signalPipeWriteFD: Int32 = -1

/// SIGCHLD and SIGTERM/SIGINT as bytes on a pipe the event loop polls ("C" = a child changed
/// state, "T" = stop). signalfd is not in the Glibc module. Also ignores SIGPIPE, so a
/// vanished peer shows up as EPIPE.
enum SignalPipe {
    static let childByte = UInt8(ascii: "C")
    static let terminateByte = UInt8(ascii: "T")

    /// Installs the handlers; returns the pipe's read end (non-blocking).
    static func install() -> Int32? {
        guard let pipe = makePipe() else { return nil }
        makeNonBlockingCloseOnExec(pipe.read)
        makeNonBlockingCloseOnExec(pipe.write)
        signalPipeWriteFD = pipe.write
        // Whoever started the agent may have blocked signals; the loop needs SIGCHLD delivered.
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        sigprocmask(SIG_SETMASK, &unblocked, nil)
        signal(SIGPIPE, SIG_IGN)
        signal(SIGCHLD) { _ in
            let saved = errno
            var byte = SignalPipe.childByte
            _ = write(signalPipeWriteFD, &byte, 1)
            errno = saved
        }
        let terminate: @convention(c) (Int32) -> Void = { _ in
            let saved = errno
            var byte = SignalPipe.terminateByte
            _ = write(signalPipeWriteFD, &byte, 1)
            errno = saved
        }
        signal(SIGTERM, terminate)
        signal(SIGINT, terminate)
        return pipe.read
    }

    /// Empties the pipe; returns which signals arrived.
    static func drain(_ fd: Int32) -> (child: Bool, terminate: Bool) {
        var child = false, terminate = false
        var buffer = [UInt8](repeating: 0, count: 64)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            for b in buffer[0..<n] {
                if b == childByte { child = true } else if b == terminateByte { terminate = true }
            }
        }
        return (child, terminate)
    }
}
