import AgentProtocol
import Glibc

/// The agent: one single-threaded poll() loop over the links, the listening sockets, the
/// sessions' stdio, the signal pipe and the nearest deadline.
final class Agent {
    static let name = "hypeman-agent 1"
    /// Largest chunk read from a session's stdout/stderr into one `output` frame.
    static let outputChunk = 32 << 10
    /// How long after the reap a session waits for EOF on its output (a background process
    /// may keep the pipes open).
    static let outputGraceMilliseconds: Int64 = 200
    /// How often a disconnected virtio-serial port is checked for a host. Short, because a
    /// restored VM's agent answers the new host connection only at its next check (restore
    /// latency); 20 wake-ups a second only while no host is connected cost nothing measurable.
    static let portRecheckMilliseconds: Int64 = 50

    let options: AgentOptions
    let mounter: VolumeMounter
    let kernel = kernelRelease()
    let signalFD: Int32
    var listeners: [Listener] = []
    var ports: [VirtioPort] = []
    var links: [Link] = []
    /// Sessions whose child has not been reaped yet (also those of dropped links).
    var unreaped: [pid_t: (link: Link, session: Session)] = [:]
    var pendingMounts: [PendingMount] = []
    private var nextLinkID = 1
    var readBuffer = [UInt8](repeating: 0, count: 64 << 10)

    init(options: AgentOptions, signalFD: Int32) throws(PosixError) {
        self.options = options
        self.signalFD = signalFD
        mounter = VolumeMounter(root: options.root, sysBlock: options.sysBlock, dev: options.dev, stateDir: options.stateDir)
        for path in options.unixPaths { listeners.append(try Listener.unix(path: path)) }
        for port in options.vsockPorts { if let l = Listener.vsock(port: port) { listeners.append(l) } }
        ports = options.virtioPorts.map { VirtioPort(name: $0, devDirectory: options.dev) }
    }

    private enum PollTarget {
        case signals
        case listener(Listener)
        case link(Link)
        case sessionOutput(Link, Session, fd: UInt8)
        case sessionInput(Link, Session)
    }

    func run() -> Never {
        while true {
            servicePorts(monotonicMilliseconds())
            var fds: [pollfd] = []
            var targets: [PollTarget] = []
            func watch(_ fd: Int32, _ events: Int32, _ target: PollTarget) {
                fds.append(pollfd(fd: fd, events: Int16(events), revents: 0)); targets.append(target)
            }
            watch(signalFD, POLLIN, .signals)
            for listener in listeners { watch(listener.fd, POLLIN, .listener(listener)) }
            for link in links where link.connected && !link.closed {
                // Stop taking frames while a session's stdin backlog is large (the child is not reading).
                let stdinBacklog = link.sessions.values.contains { $0.pendingInput.count > Link.backpressureLimit }
                watch(link.fd, (stdinBacklog ? 0 : POLLIN) | (link.outgoing.isEmpty ? 0 : POLLOUT), .link(link))
                for session in link.sessions.values {
                    if !link.isBackpressured && !session.outputPaused {
                        if session.output >= 0 { watch(session.output, POLLIN, .sessionOutput(link, session, fd: 1)) }
                        if session.errorOutput >= 0 { watch(session.errorOutput, POLLIN, .sessionOutput(link, session, fd: 2)) }
                    }
                    if session.input >= 0 && !session.pendingInput.isEmpty { watch(session.input, POLLOUT, .sessionInput(link, session)) }
                }
            }
            let rc = poll(&fds, nfds_t(fds.count), pollTimeout(monotonicMilliseconds()))
            if rc < 0 {
                if errno != EINTR { log("poll failed: \(errnoText(errno))"); usleep(100_000) }
                continue
            }
            for (i, p) in fds.enumerated() where p.revents != 0 {
                dispatch(targets[i], fd: p.fd, revents: Int32(p.revents))
            }
            handleDeadlines(monotonicMilliseconds())
        }
    }

    private func dispatch(_ target: PollTarget, fd: Int32, revents: Int32) {
        switch target {
        case .signals:
            let got = SignalPipe.drain(signalFD)
            if got.child { reapChildren() }
            if got.terminate { shutDown() }
        case .listener(let listener):
            while let connection = listener.accept() {
                let link = Link(fd: connection, name: "\(listener.name) #\(nextLinkID)", isPort: false, connected: true)
                nextLinkID += 1
                links.append(link)
                log("link up: \(link.name)")
            }
        case .link(let link):
            guard !link.closed, link.connected, link.fd == fd else { return }
            if revents & POLLOUT != 0 { flushLink(link) }
            if link.connected && !link.closed && revents & (POLLIN | POLLHUP | POLLERR) != 0 { readLink(link) }
        case .sessionOutput(let link, let session, let which):
            guard link.sessions[session.stream] === session, (which == 1 ? session.output : session.errorOutput) == fd else { return }
            readSessionOutput(link, session, fd: which)
        case .sessionInput(let link, let session):
            guard link.sessions[session.stream] === session, session.input == fd else { return }
            flushSessionInput(session)
        }
    }

    /// Milliseconds until the nearest deadline (session timeout, output grace, mount retry,
    /// port check), -1 if there is none.
    private func pollTimeout(_ now: Int64) -> Int32 {
        var nearest = Int64.max
        for link in links where !link.closed {
            for session in link.sessions.values {
                if let t = session.timeoutAt, !session.timedOut, !session.reaped { nearest = min(nearest, t) }
                if session.reaped && session.outputOpen && !link.isBackpressured && !session.outputPaused {
                    nearest = min(nearest, session.reapedAt + Agent.outputGraceMilliseconds)
                }
            }
        }
        for mount in pendingMounts { nearest = min(nearest, mount.nextCheck) }
        for port in ports where port.link?.connected != true { nearest = min(nearest, port.nextCheck) }
        return nearest == Int64.max ? -1 : Int32(clamping: max(0, nearest - now))
    }

    private func handleDeadlines(_ now: Int64) {
        for link in links where !link.closed {
            for session in Array(link.sessions.values) {
                if let t = session.timeoutAt, !session.timedOut, !session.reaped, now >= t {
                    session.timedOut = true
                    session.signalGroup(SIGKILL)
                    log("exec \(session.argv0) (stream \(session.stream)) timed out; killed")
                }
                if session.reaped && session.outputOpen && !link.isBackpressured && !session.outputPaused
                    && now >= session.reapedAt + Agent.outputGraceMilliseconds {
                    finishSession(link, session, force: true)
                }
            }
        }
        retryPendingMounts(now)
    }

    /// SIGTERM/SIGINT: kill every session's process group, then exit.
    private func shutDown() -> Never {
        log("stopping (signal): killing \(links.reduce(0) { $0 + $1.sessions.count }) session(s)")
        for link in links { killSessions(of: link) }
        exit(0)
    }
}
