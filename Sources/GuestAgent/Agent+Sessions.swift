import AgentProtocol
import Glibc

extension Agent {
    /// `execStart`: fork/exec the command; answers `exit` at once if it cannot start.
    func startSession(_ frame: Frame, on link: Link) {
        let stream = frame.stream
        func refuse(_ code: Int32, _ message: String) {
            log("exec on stream \(stream) refused: \(message)")
            link.send(.exit, stream: stream, payload: ExitStatus(code: code, error: message).encode())
        }
        guard stream != 0 else { return refuse(126, "stream 0 is the link itself; start sessions on another stream") }
        guard link.sessions[stream] == nil else { return refuse(126, "stream \(stream) already has a running session") }
        let request: ExecStart
        do { request = try ExecStart(decoding: frame.payload) } catch { return refuse(126, "bad execStart: \(error)") }

        let plan = LaunchPlan(request, options: options)
        let launched: Result<pid_t, LaunchFailure>
        let session: (pid_t) -> Session
        if request.tty {
            let pty: (master: Int32, slavePath: String)
            switch Pty.open() {
            case .success(let p): pty = p
            case .failure(let e): return refuse(126, "cannot create a terminal: \(e)")
            }
            launched = ChildProcess.launch(plan, stdio: .terminal(slave: CString(pty.slavePath), rows: request.rows, cols: request.cols))
            if case .failure = launched { close(pty.master) }
            session = { Session(stream: stream, pid: $0, argv0: plan.argv0, master: pty.master, output: pty.master, errorOutput: -1, input: pty.master) }
        } else {
            guard let stdin = makePipe() else { return refuse(126, "cannot create pipes: \(errnoText(errno))") }
            guard let stdout = makePipe() else {
                close(stdin.read); close(stdin.write)
                return refuse(126, "cannot create pipes: \(errnoText(errno))")
            }
            guard let stderr = makePipe() else {
                close(stdin.read); close(stdin.write); close(stdout.read); close(stdout.write)
                return refuse(126, "cannot create pipes: \(errnoText(errno))")
            }
            launched = ChildProcess.launch(plan, stdio: .pipes(stdin: stdin.read, stdout: stdout.write, stderr: stderr.write))
            close(stdin.read); close(stdout.write); close(stderr.write)
            for fd in [stdin.write, stdout.read, stderr.read] {
                if case .failure = launched { close(fd) } else { makeNonBlockingCloseOnExec(fd) }
            }
            session = { Session(stream: stream, pid: $0, argv0: plan.argv0, master: -1, output: stdout.read, errorOutput: stderr.read, input: stdin.write) }
        }
        switch launched {
        case .failure(let failure):
            refuse(failure.exitCode, failure.message(plan))
        case .success(let pid):
            let s = session(pid)
            if request.timeoutSeconds > 0 { s.timeoutAt = monotonicMilliseconds() + Int64(request.timeoutSeconds) * 1000 }
            link.sessions[stream] = s
            unreaped[pid] = (link, s)
            log("exec \(plan.argv0) on stream \(stream): pid \(pid)\(request.tty ? ", tty" : "")")
        }
    }

    /// Up to 32 KiB from stdout/stderr (or the pty master) as one `output` frame; EOF (or EIO
    /// from a pty whose slave is gone) closes that side.
    func readSessionOutput(_ link: Link, _ session: Session, fd which: UInt8) {
        let fd = which == 1 ? session.output : session.errorOutput
        let n = readBuffer.withUnsafeMutableBytes { raw -> Int in
            let n = read(fd, raw.baseAddress, Agent.outputChunk)
            if n > 0 { link.sendOutput(stream: session.stream, fd: which, bytes: UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
            return n
        }
        if n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)) { return }
        session.closeOutput(which)
        finishSession(link, session)
    }

    /// Writes pending stdin; closes stdin once drained after `stdinClose`, or when the child
    /// stopped reading (EPIPE).
    func flushSessionInput(_ session: Session) {
        if session.input >= 0, let e = session.pendingInput.flush(to: session.input) {
            if e != EPIPE { log("stdin of \(session.argv0) (stream \(session.stream)): \(errnoText(e))") }
            session.closeInput()
            return
        }
        if session.pendingInput.isEmpty && session.inputCloseRequested && session.input >= 0 { session.closeInput() }
    }

    /// Reaps every exited child; a session's end is reported once its output is drained too.
    func reapChildren() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid < 0 && errno == EINTR { continue }
            guard pid > 0 else { return }
            guard let (link, session) = unreaped.removeValue(forKey: pid) else { continue }
            session.waitStatus = status
            session.reapedAt = monotonicMilliseconds()
            if !link.closed && link.sessions[session.stream] === session { finishSession(link, session) }
        }
    }

    /// Sends `exit` and forgets the session once the child is reaped and its output is at EOF;
    /// `force` (the grace period after the reap is over) drains what is readable now and ends it.
    func finishSession(_ link: Link, _ session: Session, force: Bool = false) {
        guard session.reaped, force || !session.outputOpen else { return }
        if session.outputOpen { drainOutput(link, session) }
        session.closeAll()
        link.sessions[session.stream] = nil
        let code = session.exitCode
        link.send(.exit, stream: session.stream, payload: ExitStatus(code: code).encode())
        log("exec \(session.argv0) (stream \(session.stream)) ended: code \(code)\(session.timedOut ? " (timeout)" : "")")
    }

    /// What is readable right now on the session's output (a background process keeps the pipe
    /// open), bounded so a chatty one cannot stall the loop.
    private func drainOutput(_ link: Link, _ session: Session) {
        var budget = Link.backpressureLimit
        for which: UInt8 in [1, 2] {
            while budget > 0 {
                let fd = which == 1 ? session.output : session.errorOutput
                guard fd >= 0 else { break }
                let n = readBuffer.withUnsafeMutableBytes { raw -> Int in
                    let n = read(fd, raw.baseAddress, min(Agent.outputChunk, budget))
                    if n > 0 { link.sendOutput(stream: session.stream, fd: which, bytes: UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
                    return n
                }
                guard n > 0 else { break }
                budget -= n
            }
        }
    }
}
