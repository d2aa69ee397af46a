import AgentProtocol
import Glibc
import Testing

@Suite struct TtyTests {
    @Test func ttySessionHasAPtyWithTheRequestedSize() throws {
        let agent = try AgentProcess(label: "tty")
        defer { agent.finish() }
        let client = try agent.connect()
        let tty = try client.run(ExecStart(command: ["tty"], tty: true), stream: 1)
        #expect(tty.exit?.code == 0)
        let name = tty.stdoutText.trimmingSpaces
        #expect(name.hasPrefix("/dev/pts/") && Int(name.dropFirst("/dev/pts/".count)) != nil, "tty printed \(tty.stdoutText)")
        #expect(tty.stderr.isEmpty)

        let size = try client.run(ExecStart(command: ["stty", "size"], tty: true, rows: 33, cols: 101), stream: 2)
        #expect(size.stdoutText == "33 101\r\n")

        // A tty session sends stderr on fd 1 too.
        let merged = try client.run(ExecStart(command: ["sh", "-c", "echo out; echo err >&2"], tty: true), stream: 3)
        #expect(merged.stdoutText == "out\r\nerr\r\n")
        #expect(merged.stderr.isEmpty)
    }

    @Test func resizeChangesTheWindowSize() throws {
        let agent = try AgentProcess(label: "resize")
        defer { agent.finish() }
        let client = try agent.connect()
        try client.start(1, ExecStart(command: ["sh", "-c", "stty size; read line; stty size"], tty: true, rows: 24, cols: 80))
        _ = try client.waitOutput(1, containing: "24 80")
        try client.send(.resize, stream: 1, Resize(rows: 50, cols: 120).encode())
        try client.send(.stdin, stream: 1, Array("go\n".utf8))
        let result = try client.waitExit(1)
        #expect(result.stdoutText.contains("50 120"), "got \(result.stdoutText)")
        #expect(result.exit?.code == 0)
    }

    @Test func stdinCloseOnATtySendsEndOfFile() throws {
        let agent = try AgentProcess(label: "ttycat")
        defer { agent.finish() }
        let client = try agent.connect()
        let cat = try client.run(ExecStart(command: ["cat"], tty: true), stream: 1, stdin: Array("abc\n".utf8))
        #expect(cat.exit?.code == 0)
        // The terminal echoes the line, then cat prints it.
        #expect(cat.stdoutText == "abc\r\nabc\r\n")
    }
}
