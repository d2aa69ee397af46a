import AgentProtocol
import Glibc
import Testing

/// Exec sessions against a real agent on a Unix socket, with `--root /` (the host's binaries).
@Suite struct ExecTests {
    @Test func helloReportsAgentAndKernelAndPingEchoes() throws {
        let agent = try AgentProcess(label: "hello")
        defer { agent.finish() }
        let client = try agent.connect()
        let hello = try client.hello()
        var names = utsname()
        uname(&names)
        let release = withUnsafeBytes(of: &names.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        #expect(hello.version == agentProtocolVersion)
        #expect(hello.agent == "hypeman-agent 1")
        #expect(hello.kernel == release)
        try client.send(.ping, stream: 9, [1, 2, 3])
        #expect(try client.reply(.pong, stream: 9).payload == [1, 2, 3])
    }

    @Test func stdoutAndStderrArriveSeparatelyWithTheExitCode() throws {
        let agent = try AgentProcess(label: "stdio")
        defer { agent.finish() }
        let client = try agent.connect()
        let echo = try client.run(ExecStart(command: ["echo", "hello world"]), stream: 1)
        #expect(echo.stdoutText == "hello world\n")
        #expect(echo.stderr.isEmpty)
        #expect(echo.exit == ExitStatus(code: 0))

        let both = try client.run(ExecStart(command: ["sh", "-c", "echo out; echo err >&2; exit 7"]), stream: 2)
        #expect(both.stdoutText == "out\n")
        #expect(both.stderrText == "err\n")
        #expect(both.exit?.code == 7)
        #expect(both.exit?.error == "")

        let killed = try client.run(ExecStart(command: ["sh", "-c", "kill -9 $$"]), stream: 3)
        #expect(killed.exit == ExitStatus(code: 128 + 9))
    }

    @Test func environmentComesFromTheEnvFileWithRequestOverrides() throws {
        let dir = try TempDirectory("env")
        let agent = try AgentProcess(label: "env", arguments: ["--env-file", "\(dir.path)/env"], directory: dir)
        defer { agent.finish() }
        let client = try agent.connect()

        // No env file yet: the defaults.
        let defaults = try client.run(ExecStart(command: ["sh", "-c", "echo \"$HOME|$PATH|$A\""]), stream: 1)
        #expect(defaults.stdoutText == "/root|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|\n")

        // The file appears later and is read for each exec; its PATH finds a tool in it.
        try dir.makeDirectory("bin")
        try dir.write("bin/hello-tool", "#!/bin/sh\necho \"tool ran with $B\"\n", mode: 0o755)
        try dir.writeBytes("env", Array("A=from-file\0B=base\0PATH=\(dir.path)/bin:/usr/bin:/bin\0".utf8))
        let merged = try client.run(ExecStart(command: ["sh", "-c", "echo \"$A|$B|$C\""], env: ["B=override", "C=new"]), stream: 2)
        #expect(merged.stdoutText == "from-file|override|new\n")
        let tool = try client.run(ExecStart(command: ["hello-tool"]), stream: 3)
        #expect(tool.stdoutText == "tool ran with base\n")
        #expect(tool.exit?.code == 0)
    }

    @Test func workingDirectoryIsTheRequestsElseTheWorkdirFileElseRoot() throws {
        let dir = try TempDirectory("cwd")
        try dir.makeDirectory("req")
        try dir.makeDirectory("image-wd")
        let agent = try AgentProcess(label: "cwd", arguments: ["--workdir-file", "\(dir.path)/workdir"], directory: dir)
        defer { agent.finish() }
        let client = try agent.connect()
        #expect(try client.run(ExecStart(command: ["pwd"]), stream: 1).stdoutText == "/\n")
        try dir.write("workdir", "\(dir.path)/image-wd\n")
        #expect(try client.run(ExecStart(command: ["pwd"]), stream: 2).stdoutText == "\(dir.path)/image-wd\n")
        #expect(try client.run(ExecStart(command: ["pwd"], cwd: "\(dir.path)/req"), stream: 3).stdoutText == "\(dir.path)/req\n")

        let missing = try client.run(ExecStart(command: ["pwd"], cwd: "\(dir.path)/nope"), stream: 4)
        #expect(missing.exit?.code == 126)
        #expect(missing.exit?.error.contains("working directory \(dir.path)/nope") == true)
    }

    @Test func commandsThatCannotStartAnswer127Or126WithTheReason() throws {
        let agent = try AgentProcess(label: "notfound")
        defer { agent.finish() }
        try agent.directory.write("plain-file", "echo never\n", mode: 0o644)
        let client = try agent.connect()

        let missing = try client.run(ExecStart(command: ["no-such-command-xyz", "arg"]), stream: 1)
        #expect(missing.exit == ExitStatus(code: 127, error: "executable file not found in $PATH: no-such-command-xyz"))

        let missingPath = try client.run(ExecStart(command: ["/nonexistent/tool"]), stream: 2)
        #expect(missingPath.exit?.code == 127)
        #expect(missingPath.exit?.error == "/nonexistent/tool: No such file or directory")

        let notExecutable = try client.run(ExecStart(command: ["\(agent.directory.path)/plain-file"]), stream: 3)
        #expect(notExecutable.exit?.code == 126)
        #expect(notExecutable.exit?.error == "\(agent.directory.path)/plain-file: Permission denied")

        // Stream 0 is the link; a busy stream is refused; a malformed payload is answered too.
        try client.start(0, ExecStart(command: ["true"]))
        #expect(try client.waitExit(0).exit?.code == 126)
        try client.start(5, ExecStart(command: ["sleep", "5"]))
        try client.start(5, ExecStart(command: ["true"]))
        let duplicate = try client.waitExit(5)
        #expect(duplicate.exit?.code == 126 && duplicate.exit?.error.contains("already") == true)
        try client.send(.execStart, stream: 6, [0, 0, 0, 9])
        #expect(try client.waitExit(6).exit?.error.contains("bad execStart") == true)
        // The link still works.
        #expect(try client.run(ExecStart(command: ["true"]), stream: 7).exit?.code == 0)
    }

    @Test func emptyCommandRunsShAndStdinReachesTheProcess() throws {
        let agent = try AgentProcess(label: "stdin")
        defer { agent.finish() }
        let client = try agent.connect()
        let cat = try client.run(ExecStart(command: ["cat"]), stream: 1, stdin: Array("hello\nworld".utf8))
        #expect(cat.stdoutText == "hello\nworld")
        #expect(cat.exit?.code == 0)
        let shell = try client.run(ExecStart(command: []), stream: 2, stdin: Array("echo via-sh; exit 3\n".utf8))
        #expect(shell.stdoutText == "via-sh\n")
        #expect(shell.exit?.code == 3)
        // stdin in several frames, with the close after the last.
        try client.start(3, ExecStart(command: ["wc", "-c"]))
        for _ in 0..<50 { try client.send(.stdin, stream: 3, [UInt8](repeating: 65, count: 10_000)) }
        try client.send(.stdinClose, stream: 3)
        #expect(try client.waitExit(3).stdoutText.trimmingSpaces == "500000")
    }

    @Test func timeoutKillsTheGroupWithCode124() throws {
        let agent = try AgentProcess(label: "timeout")
        defer { agent.finish() }
        let client = try agent.connect()
        let started = monotonicSeconds()
        let result = try client.run(ExecStart(command: ["sleep", "30"], timeoutSeconds: 1), stream: 1, within: 5)
        let elapsed = monotonicSeconds() - started
        #expect(result.exit?.code == 124)
        #expect(elapsed >= 0.9 && elapsed < 2.5, "took \(elapsed) s")
    }

    @Test func signalFrameReachesTheProcessGroup() throws {
        let agent = try AgentProcess(label: "signal")
        defer { agent.finish() }
        let client = try agent.connect()
        try client.start(1, ExecStart(command: ["sh", "-c", "trap 'echo got TERM; exit 5' TERM; echo ready; while :; do sleep 0.05; done"]))
        _ = try client.waitOutput(1, containing: "ready")
        try client.send(.signal, stream: 1, SignalRequest(signal: SIGTERM).encode())
        let trapped = try client.waitExit(1, within: 5)
        #expect(trapped.stdoutText == "ready\ngot TERM\n")
        #expect(trapped.exit?.code == 5)

        try client.start(2, ExecStart(command: ["sleep", "30"]))
        try client.send(.signal, stream: 2, SignalRequest(signal: SIGKILL).encode())
        #expect(try client.waitExit(2, within: 5).exit == ExitStatus(code: 128 + SIGKILL))
    }

    @Test func manySessionsRunConcurrently() throws {
        let agent = try AgentProcess(label: "concurrent")
        defer { agent.finish() }
        let client = try agent.connect()
        let started = monotonicSeconds()
        for stream: UInt32 in 1...5 { try client.start(stream, ExecStart(command: ["sh", "-c", "sleep 1; echo done \(stream)"])) }
        for stream: UInt32 in 1...5 {
            let result = try client.waitExit(stream, within: 10)
            #expect(result.stdoutText == "done \(stream)\n")
            #expect(result.exit?.code == 0)
        }
        let elapsed = monotonicSeconds() - started
        #expect(elapsed < 3, "5 × sleep 1 took \(elapsed) s")
    }

    @Test func eightMebibytesOfOutputArriveIntact() throws {
        let agent = try AgentProcess(label: "bulk")
        defer { agent.finish() }
        let client = try agent.connect()
        let size = 8 << 20
        let result = try client.run(ExecStart(command: ["sh", "-c", "yes 0123456789abcde | head -c \(size)"]), stream: 1, within: 60)
        #expect(result.exit?.code == 0)
        #expect(result.stdout.count == size)
        let line = Array("0123456789abcde\n".utf8)
        let intact = result.stdout.enumerated().allSatisfy { $0.element == line[$0.offset & 15] }
        #expect(intact, "the output bytes are not the expected repeating line")
    }

    @Test func backgroundProcessHoldingThePipeDoesNotDelayTheExit() throws {
        let agent = try AgentProcess(label: "background")
        defer { agent.finish() }
        let client = try agent.connect()
        let started = monotonicSeconds()
        let result = try client.run(ExecStart(command: ["sh", "-c", "sleep 2 & echo parent done"]), stream: 1, within: 10)
        #expect(result.stdoutText == "parent done\n")
        #expect(result.exit?.code == 0)
        #expect(monotonicSeconds() - started < 1.5)
    }
}

extension String {
    var trimmingSpaces: String { String(self.filter { !$0.isWhitespace }) }
}

/// Per-session output flow control: `pauseOutput` stops reading one session's output (its
/// process then blocks on the full pipe) while other sessions on the link go on.
@Suite struct FlowControlTests {
    @Test func pausedOutputHoldsOneSessionAndResumeDeliversTheRest() throws {
        let agent = try AgentProcess(label: "flow")
        defer { agent.finish() }
        let client = try agent.connect()
        _ = try client.hello()
        try client.start(1, ExecStart(command: ["sh", "-c", "head -c 4000000 /dev/zero | tr '\\0' a; echo end"]))
        try client.send(.pauseOutput, stream: 1)
        // Whatever was read before the pause arrives; then nothing more while paused.
        _ = try client.pump(0.5) { false }
        let heldAt = client.sessions[1]?.stdout.count ?? 0
        #expect(heldAt < 4_000_000)
        // Another session on the same link is not held up.
        let other = try client.run(ExecStart(command: ["echo", "independent"]), stream: 2)
        #expect(other.stdoutText == "independent\n")
        _ = try client.pump(0.3) { false }
        #expect((client.sessions[1]?.stdout.count ?? 0) == heldAt)
        #expect(client.sessions[1]?.exit == nil)
        try client.send(.resumeOutput, stream: 1)
        let done = try client.waitExit(1)
        #expect(done.exit?.code == 0)
        #expect(done.stdout.count == 4_000_004)
    }
}
