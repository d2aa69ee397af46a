import AgentProtocol
@testable import ExecGateway
import Foundation
import Testing

@Suite("Exec gateway: sessions")
struct SessionTests {
    static let exit0 = #"{"exitCode":0}"#

    @Test("echo: binary output, then {\"exitCode\":0}, then close 1000; one log line")
    func echo() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["echo","hello","world"]}"#)
        let frames = try c.readUntilClose()
        #expect(frames.map(\.opcode) == [2, 1, 8])
        #expect(frames.first?.text == "hello world\n")
        #expect(frames.dropFirst().first?.text == Self.exit0)
        #expect(frames.last?.closeCode == 1000)
        #expect(frames.allSatisfy { $0.fin })
        #expect(c.readsEOF())
        #expect(GatewayHarness.eventually { h.logs.count == 1 })
        let line = h.logs.first ?? ""
        #expect(line.contains("instance=id-box") && line.contains("command=echo") && line.contains("exit=0") && line.contains("duration="),
                "log: \(line)")
    }

    @Test("the log line names who ran it (X-Auth-Subject from nginx), quoted when it is not one plain word")
    func subjectIsLogged() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        for (subject, expected) in [("alice", "subject=alice"), ("ops team", #"subject="ops team""#),
                                    (#"x command=rm"#, #"subject="x command=rm""#), ("-", "subject=-")] as [(String?, String)] {
            let before = h.logs.count
            let c = try WebSocketTestClient(path: h.path)
            c.send(WebSocketTestClient.upgradeRequest(target: "/instances/box/exec", replacing: ["X-Auth-Subject": subject]))
            #expect(try c.readHTTPReply().status == 101)
            c.sendText(#"{"command":["echo","hi"]}"#)
            _ = try c.readUntilClose()
            #expect(GatewayHarness.eventually { h.logs.count == before + 1 })
            let line = h.logs.last ?? ""
            #expect(line.contains(" \(expected) command=echo "), "log: \(line)")
        }
    }

    @Test("stderr output is forwarded like stdout; nonzero exit codes pass through")
    func stderrAndExitCode() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["stderr"]}"#)
        let frames = try c.readUntilClose()
        #expect(frames.map(\.opcode) == [2, 1, 8])
        #expect(frames.map(\.text).prefix(2) == ["oops\n", #"{"exitCode":3}"#])
        #expect(frames.last?.closeCode == 1000)
    }

    @Test("stdin round trip: binary and plain text frames reach stdin")
    func stdinRoundTrip() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["cat"]}"#)
        c.sendBinary(Array("abc\u{0}\u{ff}".utf8))
        #expect(try c.readFrame() == .init(fin: true, opcode: 2, payload: Array("abc\u{0}\u{ff}".utf8)))
        c.sendText("hi there")
        #expect(try c.readFrame()?.text == "hi there")
        c.sendText(#"{"resize":"not a resize"}"#)
        #expect(try c.readFrame()?.text == #"{"resize":"not a resize"}"#)
        c.sendText("EOF")
        let frames = try c.readUntilClose()
        #expect(frames.map(\.text).first == Self.exit0)
        #expect(frames.last?.closeCode == 1000)
    }

    @Test("a resize message resizes; anything else that looks like one goes to stdin")
    func resize() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["resize"],"tty":true,"rows":24,"cols":80}"#)
        c.sendText(#"{"resize":{"rows":50,"cols":132}}"#)
        #expect(try c.readFrame()?.text == "resize rows=50 cols=132\n")
        c.sendText(#" { "resize" : { "cols" : 100 , "rows" : 30 } } "#)
        #expect(try c.readFrame()?.text == "resize rows=30 cols=100\n")
        c.sendText(#"{"resize":{"rows":0,"cols":80}}"#)
        #expect(try c.readFrame()?.text == #"stdin: {"resize":{"rows":0,"cols":80}}"# + "\n")
        c.sendText(#"{"resize":{"rows":5,"cols":80},"x":1}"#)
        #expect(try c.readFrame()?.text == #"stdin: {"resize":{"rows":5,"cols":80},"x":1}"# + "\n")
        c.sendText("EOF")
        #expect(try c.readUntilClose().first?.text == Self.exit0)
        let start = h.backend.opened.first?.start
        #expect(start?.tty == true && start?.rows == 24 && start?.cols == 80)
    }

    @Test("a command that cannot start: Error line, then exitCode 127")
    func failedStart() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["fail"]}"#)
        let frames = try c.readUntilClose()
        #expect(frames.map(\.opcode) == [2, 1, 8])
        #expect(frames.first?.text == "Error: executable file not found in $PATH: fail\r\n")
        #expect(frames.dropFirst().first?.text == #"{"exitCode":127}"#)
        #expect(frames.last?.closeCode == 1000)
        #expect(GatewayHarness.eventually { h.logs.first?.contains("exit=127") == true })
    }

    @Test("an unreachable agent: Error line with the backend's message, exitCode 127")
    func backendOpenFails() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, ref: "noagent", request: #"{"command":["echo","x"],"wait_for_agent":2}"#)
        let frames = try c.readUntilClose()
        #expect(frames.map(\.text).prefix(2) == ["Error: guest agent did not answer within 5 s\r\n", #"{"exitCode":127}"#])
        #expect(frames.last?.closeCode == 1000)
        #expect(h.backend.opened.first?.waitForAgent == 2)
    }

    @Test("the first message maps onto ExecStart")
    func requestMapping() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let request = #"{"command":["echo","a b"],"tty":false,"env":{"ZED":"1","ALPHA":"x=y","MID":""},"cwd":"/srv","#
            + #""timeout":30,"wait_for_agent":1000,"unknown":{"ignored":true},"rows":null}"#
        let c = try WebSocketTestClient.session(h.path, request: request)
        #expect(try c.readUntilClose().count == 3)
        let c2 = try WebSocketTestClient.session(h.path, request: #"{"command":[]}"#)
        _ = try c2.readUntilClose()
        let opened = h.backend.opened
        try #require(opened.count == 2)
        #expect(opened[0].start == ExecStart(command: ["echo", "a b"], env: ["ALPHA=x=y", "MID=", "ZED=1"], cwd: "/srv",
                                             tty: false, rows: 0, cols: 0, timeoutSeconds: 30))
        #expect(opened[0].waitForAgent == 300)
        #expect(opened[1].start.command == ["/bin/sh"])
        #expect(opened[1].waitForAgent == 5)
    }

    /// Expects `{"error": …}` containing `contains`, then close 1008, and that no session opened.
    func expectRejected(_ h: GatewayHarness, _ c: WebSocketTestClient, contains: String,
                        sourceLocation: SourceLocation = #_sourceLocation) throws {
        let frames = try c.readUntilClose()
        #expect(frames.map(\.opcode) == [1, 8], sourceLocation: sourceLocation)
        let json = (try? JSONSerialization.jsonObject(with: Data(frames.first?.payload ?? []))) as? [String: Any]
        let error = json?["error"] as? String ?? ""
        #expect(json?.count == 1 && error.contains(contains), "got \(frames.first?.text ?? "nothing")", sourceLocation: sourceLocation)
        #expect(frames.last?.closeCode == 1008, sourceLocation: sourceLocation)
    }

    @Test("bad first messages get {\"error\": …} and close 1008", arguments: [
        (#"{"command":"ls"}"#, "command must be an array of strings"),
        (#"{"command":["ls",1]}"#, "command[1] must be a string"),
        (#"{"tty":"yes"}"#, "tty must be a boolean"),
        (#"{"env":{"A=B":"1"}}"#, "must not contain '='"),
        (#"{"env":{"":"1"}}"#, "env keys must not be empty"),
        (#"{"env":{"A":1}}"#, "env value of A must be a string"),
        (#"{"env":["A=1"]}"#, "env must be an object"),
        (#"{"cwd":5}"#, "cwd must be a string"),
        (#"{"timeout":-1}"#, "timeout must be a whole number"),
        (#"{"timeout":1.5}"#, "timeout must be a whole number"),
        (#"{"wait_for_agent":"soon"}"#, "wait_for_agent must be a number"),
        (#"{"rows":0,"tty":true}"#, "rows must be a whole number from 1"),
        (#"{"cols":true}"#, "cols must be a whole number from 1"),
        (#"["ls"]"#, "must be a JSON object"),
        ("ls -l", "the first message must be a JSON exec request"),
    ])
    func badFirstMessage(request: String, expected: String) throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: request)
        try expectRejected(h, c, contains: expected)
        #expect(h.backend.opened.isEmpty)
    }

    @Test("a binary first message is rejected")
    func binaryFirstMessage() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try h.client()
        try c.upgrade()
        c.sendBinary(Array(#"{"command":["echo"]}"#.utf8))
        try expectRejected(h, c, contains: "text frame")
        #expect(h.backend.opened.isEmpty)
    }

    @Test("a client that goes away mid-session cancels it")
    func disconnectCancels() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["sleep","30"]}"#)
        #expect(GatewayHarness.eventually { h.backend.opened.count == 1 })
        c.abort()
        #expect(GatewayHarness.eventually { h.backend.cancels == 1 })
        #expect(GatewayHarness.eventually { h.server.liveSessions == 0 })
        #expect(GatewayHarness.eventually { h.logs.first?.contains("cancelled (client disconnected)") == true }, "\(h.logs)")
    }

    @Test("a client close frame mid-session cancels it and is echoed")
    func closeFrameCancels() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["cat"]}"#)
        c.sendText("ping?")
        #expect(try c.readFrame()?.text == "ping?")
        c.sendClose(1001)
        let reply = try c.readFrame()
        #expect(reply?.opcode == 8 && reply?.closeCode == 1001)
        #expect(GatewayHarness.eventually { h.backend.cancels == 1 })
        #expect(c.readsEOF())
    }

    @Test("a finished session is not cancelled when the client closes afterwards")
    func noCancelAfterExit() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["echo"]}"#)
        _ = try c.readUntilClose()
        #expect(c.readsEOF())
        #expect(GatewayHarness.eventually { h.server.liveSessions == 0 })
        #expect(h.backend.cancels == 0)
    }

    @Test("8 sessions run at once")
    func concurrentSessions() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let clients = try (0..<8).map { _ in try WebSocketTestClient.session(h.path, request: #"{"command":["cat"]}"#) }
        #expect(GatewayHarness.eventually { h.server.liveSessions == 8 })
        for (i, c) in clients.enumerated().reversed() { c.sendText("client \(i)") }
        for (i, c) in clients.enumerated() { #expect(try c.readFrame()?.text == "client \(i)") }
        for c in clients { c.sendText("EOF") }
        for c in clients { #expect(try c.readUntilClose().first?.text == Self.exit0) }
        #expect(GatewayHarness.eventually { h.server.liveSessions == 0 })
        #expect(h.backend.cancels == 0)
    }

    @Test("past maxSessions the upgrade is refused with 503 limit_exceeded; a freed slot is reusable")
    func sessionLimit() throws {
        let h = try GatewayHarness(maxSessions: 2)
        defer { h.stop() }
        let a = try WebSocketTestClient.session(h.path, request: #"{"command":["cat"]}"#)
        let b = try WebSocketTestClient.session(h.path, request: #"{"command":["cat"]}"#)
        #expect(GatewayHarness.eventually { h.server.liveSessions == 2 })
        let c = try h.client()
        c.send(WebSocketTestClient.upgradeRequest(target: "/instances/box/exec"))
        let reply = try c.readHTTPReply()
        #expect(reply.status == 503)
        #expect(reply.json?["code"] as? String == "limit_exceeded")
        a.sendText("EOF")
        _ = try a.readUntilClose()
        #expect(GatewayHarness.eventually { h.server.liveSessions == 1 })
        let d = try WebSocketTestClient.session(h.path, request: #"{"command":["echo","again"]}"#)
        #expect(try d.readFrame()?.text == "again\n")
        b.sendText("EOF")
        _ = try b.readUntilClose()
    }

    @Test("stop() cancels live sessions and returns")
    func stopCancels() throws {
        let h = try GatewayHarness()
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["sleep","30"]}"#)
        #expect(GatewayHarness.eventually { h.backend.opened.count == 1 })
        let started = Date()
        h.stop()
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(h.backend.cancels == 1)
        #expect(c.readsEOF())
        #expect(access(h.path, F_OK) != 0, "stop() removes the socket file")
        #expect(throws: (any Error).self) { try WebSocketTestClient(path: h.path) }
    }

    @Test("flow control: a client that stops reading pauses its session's output, never the backend's thread; reading resumes it")
    func slowClientPausesOutput() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let before = FakeSession.floodLongestCall.all.count
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["flood","48"]}"#)
        // The client reads nothing: the gateway pauses the session after a few MiB.
        #expect(GatewayHarness.eventually(10) { FakeSession.flowControl.all.contains("pause") })
        usleep(300_000)
        #expect(FakeSession.floodLongestCall.all.count == before, "the flood must be held by the pause")
        // Now it reads: output resumes and everything arrives, then the exit.
        let frames = try c.readUntilClose()
        let bytes = frames.filter { $0.opcode == 2 }.reduce(0) { $0 + $1.payload.count }
        #expect(bytes == 48 << 20)
        #expect(frames.filter { $0.opcode == 1 }.map(\.text) == [Self.exit0])
        #expect(FakeSession.flowControl.all.contains("resume"))
        #expect((FakeSession.floodLongestCall.all.last ?? 99) < 1, "an events call blocked the backend's thread")
        #expect(h.backend.cancels == 0)
    }
}
