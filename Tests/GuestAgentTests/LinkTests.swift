import AgentProtocol
import Glibc
import Testing

@Suite struct LinkTests {
    /// Starts `sleep 1000` that first prints its pid.
    private func startSleeper(_ client: AgentClient, stream: UInt32) throws -> pid_t {
        try client.start(stream, ExecStart(command: ["sh", "-c", "echo $$; exec sleep 1000"]))
        let text = try client.waitOutput(stream, containing: "\n")
        guard let pid = pid_t(text.trimmingSpaces) else { throw AgentTestError("expected a pid, got \(text)") }
        return pid
    }

    private func isGone(_ pid: pid_t) -> Bool { kill(pid, 0) != 0 && errno == ESRCH }

    @Test func closingTheLinkKillsItsSessions() throws {
        let agent = try AgentProcess(label: "linkclose")
        defer { agent.finish() }
        let client = try agent.connect()
        let pid = try startSleeper(client, stream: 1)
        #expect(!isGone(pid))
        client.close()
        #expect(waitUntil(3) { isGone(pid) }, "sleep (pid \(pid)) still exists 3 s after its link closed")
    }

    @Test func helloResetsTheLink() throws {
        let agent = try AgentProcess(label: "hello-reset")
        defer { agent.finish() }
        let client = try agent.connect()
        let pid = try startSleeper(client, stream: 1)
        _ = try client.hello()
        #expect(waitUntil(3) { isGone(pid) }, "a second hello did not kill the previous session")
        #expect(try client.run(ExecStart(command: ["echo", "after"]), stream: 2).stdoutText == "after\n")
    }

    @Test func connectionsAreIndependent() throws {
        let agent = try AgentProcess(label: "twolinks")
        defer { agent.finish() }
        let first = try agent.connect()
        let second = try agent.connect()
        let firstPid = try startSleeper(first, stream: 1)
        // The same stream id on another link is another session.
        try second.start(1, ExecStart(command: ["sh", "-c", "sleep 1; echo second done"]))
        first.close()
        #expect(waitUntil(3) { isGone(firstPid) })
        let result = try second.waitExit(1)
        #expect(result.stdoutText == "second done\n")
        #expect(result.exit?.code == 0)
    }

    @Test func aBrokenFrameDropsOnlyThatLink() throws {
        let agent = try AgentProcess(label: "garbage")
        defer { agent.finish() }
        let good = try agent.connect()
        let bad = try agent.connect()
        let badPid = try startSleeper(bad, stream: 1)
        try bad.sendRaw([0, 0, 0, 1, 99, 0, 0, 0, 1, 0])   // kind 99 does not exist
        #expect(bad.waitClosedByAgent(within: 3))
        #expect(waitUntil(3) { isGone(badPid) })

        let huge = try agent.connect()
        try huge.sendRaw([0x7f, 0, 0, 0, 10, 0, 0, 0, 1])   // a 2 GiB frame
        #expect(huge.waitClosedByAgent(within: 3))

        try good.send(.ping, stream: 3, [7])
        #expect(try good.reply(.pong, stream: 3).payload == [7])
        #expect(try good.run(ExecStart(command: ["echo", "still here"]), stream: 4).stdoutText == "still here\n")
        #expect(agent.log.contains("bad frame"))
    }
}
