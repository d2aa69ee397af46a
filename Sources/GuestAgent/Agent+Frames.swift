import AgentProtocol
import Glibc

extension Agent {
    /// One frame from the host. Malformed payloads are answered (exit 126 / result ok:false) or
    /// logged; they never end the agent.
    func handle(_ frame: Frame, on link: Link) {
        switch frame.kind {
        case .hello:
            killSessions(of: link)
            pendingMounts.removeAll { $0.link === link }
            if let request = try? HelloRequest(decoding: frame.payload), request.version != agentProtocolVersion {
                log("host on \(link.name) speaks protocol \(request.version), this agent \(agentProtocolVersion)")
            }
            link.send(.hello, stream: frame.stream, payload: HelloReply(agent: Agent.name, kernel: kernel).encode())
        case .ping:
            link.send(.pong, stream: frame.stream, payload: frame.payload)
        case .execStart:
            startSession(frame, on: link)
        case .stdin:
            guard let session = link.sessions[frame.stream], session.input >= 0, !session.inputCloseRequested else { return }
            session.pendingInput.append(frame.payload)
            flushSessionInput(session)
        case .stdinClose:
            guard let session = link.sessions[frame.stream], session.input >= 0, !session.inputCloseRequested else { return }
            if session.isTTY {
                session.pendingInput.append([0x04])   // ^D: EOF for a line-buffered reader
            }
            session.inputCloseRequested = true
            flushSessionInput(session)
        case .pauseOutput:
            link.sessions[frame.stream]?.outputPaused = true
        case .resumeOutput:
            link.sessions[frame.stream]?.outputPaused = false
        case .resize:
            guard let session = link.sessions[frame.stream], session.isTTY else { return }
            do {
                let size = try Resize(decoding: frame.payload)
                Pty.setWindowSize(session.master, rows: size.rows, cols: size.cols)
            } catch { log("bad resize on stream \(frame.stream): \(error)") }
        case .signal:
            guard let session = link.sessions[frame.stream] else { return }
            do {
                let request = try SignalRequest(decoding: frame.payload)
                guard request.signal > 0 && request.signal < 65 else { log("signal \(request.signal) is not a valid signal number"); return }
                session.signalGroup(request.signal)
            } catch { log("bad signal request on stream \(frame.stream): \(error)") }
        case .mount:
            startMount(frame, on: link)
        case .unmount:
            unmount(frame, on: link)
        case .pong, .output, .exit, .result:
            log("ignoring a \(frame.kind) frame from the host on \(link.name)")
        }
    }
}
