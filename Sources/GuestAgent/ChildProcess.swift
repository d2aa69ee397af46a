import Glibc

/// The child's standard streams: a pty slave (opened in the child, so it becomes the
/// controlling terminal) or the three pipe ends.
enum ChildStdio {
    case terminal(slave: CString, rows: UInt32, cols: UInt32)
    case pipes(stdin: Int32, stdout: Int32, stderr: Int32)
}

/// fork + exec for sessions. The child runs in its own session and process group and only
/// calls syscalls on data prepared before the fork; if it cannot exec, it writes the failing
/// step and errno to a close-on-exec pipe, which the parent reads (EOF there means exec worked).
enum ChildProcess {
    static func launch(_ plan: LaunchPlan, stdio: ChildStdio) -> Result<pid_t, LaunchFailure> {
        guard let errorPipe = makePipe() else { return .failure(LaunchFailure(stage: .fork, code: errno)) }
        let report = UnsafeMutablePointer<Int32>.allocate(capacity: 2)
        report.initialize(repeating: 0, count: 2)
        defer { report.deallocate() }

        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        let pid = fork()
        if pid == 0 { runChild(plan, stdio: stdio, errorFD: errorPipe.write, report: report, signalMask: &unblocked) }
        let forkErrno = errno
        close(errorPipe.write)
        defer { close(errorPipe.read) }
        guard pid > 0 else { return .failure(LaunchFailure(stage: .fork, code: forkErrno)) }

        var received = 0
        while received < 8 {
            let n = read(errorPipe.read, UnsafeMutableRawPointer(report) + received, 8 - received)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            received += n
        }
        guard received == 8 else { return .success(pid) }
        // The child exits on its own; the SIGCHLD handling reaps it.
        return .failure(LaunchFailure(stage: LaunchFailure.Stage(rawValue: report[0]) ?? .exec, code: report[1]))
    }

    private static func runChild(_ plan: LaunchPlan, stdio: ChildStdio, errorFD: Int32,
                                 report: UnsafeMutablePointer<Int32>, signalMask: UnsafePointer<sigset_t>) -> Never {
        func fail(_ stage: LaunchFailure.Stage, _ code: Int32) -> Never {
            report[0] = stage.rawValue
            report[1] = code
            _ = write(errorFD, report, 8)
            _exit(LaunchFailure(stage: stage, code: code).exitCode)
        }
        // The agent ignores SIGPIPE; exec keeps ignored signals and the mask, so undo both.
        signal(SIGPIPE, SIG_DFL)
        sigprocmask(SIG_SETMASK, signalMask, nil)
        _ = setsid()
        switch stdio {
        case .terminal(let slave, let rows, let cols):
            let fd = open(slave.pointer, O_RDWR)
            if fd < 0 { fail(.terminal, errno) }
            _ = ioctl(fd, UInt(TIOCSCTTY), 0)
            if rows > 0 && cols > 0 {
                var size = winsize(ws_row: UInt16(clamping: rows), ws_col: UInt16(clamping: cols), ws_xpixel: 0, ws_ypixel: 0)
                _ = ioctl(fd, UInt(TIOCSWINSZ), &size)
            }
            dup2(fd, 0); dup2(fd, 1); dup2(fd, 2)
            if fd > 2 { close(fd) }
        case .pipes(let input, let output, let error):
            dup2(input, 0); dup2(output, 1); dup2(error, 2)
        }
        if let root = plan.rootPath {
            if chroot(root.pointer) != 0 { fail(.chroot, errno) }
            if chdir("/") != 0 { fail(.chroot, errno) }
        }
        if chdir(plan.cwdPath.pointer) != 0 { fail(.workdir, errno) }

        // Like execvp: a missing candidate moves on to the next; EACCES is remembered; any other
        // error ends the search.
        var sawAccessDenied = false
        var last = ENOENT
        var i = 0
        while let path = plan.candidates.pointer[i] {
            execve(path, plan.argv.pointer, plan.envp.pointer)
            last = errno
            if last == EACCES { sawAccessDenied = true } else if last != ENOENT && last != ENOTDIR && last != ESTALE && last != ENODEV && last != ETIMEDOUT { break }
            i += 1
        }
        fail(.exec, sawAccessDenied && (last == ENOENT || last == ENOTDIR) ? EACCES : last)
    }
}
