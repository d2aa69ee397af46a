import AgentProtocol
import Glibc

extension Agent {
    /// Opens virtio-serial ports that appeared and notices hosts connecting to open ones.
    func servicePorts(_ now: Int64) {
        for port in ports where now >= port.nextCheck {
            if port.link == nil {
                guard let (fd, device) = port.tryOpen() else { port.nextCheck = now + VirtioPort.retryMilliseconds; continue }
                let link = Link(fd: fd, name: "virtio-serial \(port.name)", isPort: true, connected: false)
                port.link = link
                links.append(link)
                log("virtio-serial port \(port.name) is \(device)")
            }
            guard let link = port.link, !link.connected else { continue }
            if VirtioPort.hostConnected(link.fd) {
                link.connected = true
                log("link up: \(link.name)")
            } else {
                port.nextCheck = now + Agent.portRecheckMilliseconds
            }
        }
    }

    func flushLink(_ link: Link) {
        if let e = link.outgoing.flush(to: link.fd) { dropLink(link, reason: errnoText(e)) }
    }

    func readLink(_ link: Link) {
        let n = readBuffer.withUnsafeMutableBytes { raw -> Int in
            let n = read(link.fd, raw.baseAddress, raw.count)
            if n > 0 { link.decoder.feed(UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
            return n
        }
        if n == 0 { dropLink(link, reason: link.isPort ? "host disconnected" : "closed by the host"); return }
        if n < 0 {
            if errno != EAGAIN && errno != EINTR { dropLink(link, reason: errnoText(errno)) }
            return
        }
        while link.connected && !link.closed {
            let frame: Frame?
            do { frame = try link.decoder.next() } catch {
                dropLink(link, reason: "bad frame: \(error)")
                return
            }
            guard let frame else { break }
            handle(frame, on: link)
        }
        if !link.outgoing.isEmpty && !link.closed { flushLink(link) }
    }

    /// The host went away or broke the framing: kill the link's sessions, forget its pending
    /// requests. A connection is closed; a virtio-serial port is kept and waits for a host.
    func dropLink(_ link: Link, reason: String) {
        log("link down: \(link.name) (\(reason))")
        killSessions(of: link)
        pendingMounts.removeAll { $0.link === link }
        if link.isPort {
            link.connected = false
            link.decoder.reset()
            link.outgoing.removeAll()
            if let port = ports.first(where: { $0.link === link }) {
                port.nextCheck = monotonicMilliseconds() + Agent.portRecheckMilliseconds
            }
        } else {
            link.closed = true
            close(link.fd)
            links.removeAll { $0 === link }
        }
    }

    /// SIGKILL to each session's process group; the children are reaped by the SIGCHLD handling.
    func killSessions(of link: Link) {
        for session in link.sessions.values {
            session.signalGroup(SIGKILL)
            session.closeAll()
            log("exec \(session.argv0) (stream \(session.stream)) killed: its link is gone or was reset")
        }
        link.sessions.removeAll()
    }
}
