import Testing
@testable import AgentProtocol

@Suite struct FrameTests {
    @Test func roundTripsFramesSplitAnywhere() throws {
        let frames = [
            Frame(.execStart, stream: 7, payload: ExecStart(command: ["sh", "-c", "echo ü"], env: ["A=b"], cwd: "/tmp",
                                                             tty: true, rows: 24, cols: 80, timeoutSeconds: 5).encode()),
            Frame(.output, stream: 7, payload: Output(fd: 2, bytes: [0, 1, 255]).encode()),
            Frame(.exit, stream: 7, payload: ExitStatus(code: 127, error: "executable file not found: nope").encode()),
            Frame(.ping, stream: 0),
        ]
        let bytes = frames.flatMap { $0.encoded() }
        for cut in 0...bytes.count {
            var d = FrameDecoder()
            var got: [Frame] = []
            d.feed(Array(bytes[..<cut]))
            while let f = try d.next() { got.append(f) }
            d.feed(Array(bytes[cut...]))
            while let f = try d.next() { got.append(f) }
            #expect(got == frames)
        }
        let start = try ExecStart(decoding: frames[0].payload)
        #expect(start.command == ["sh", "-c", "echo ü"] && start.tty && start.rows == 24 && start.timeoutSeconds == 5)
        #expect(try ExitStatus(decoding: frames[2].payload).code == 127)
    }

    @Test func rejectsOversizedAndUnknownFrames() {
        var d = FrameDecoder()
        d.feed([0x7f, 0, 0, 0, 1, 0, 0, 0, 0])
        #expect(throws: FrameDecoder.DecodeError.tooLarge(0x7f00_0000)) { try d.next() }
        var u = FrameDecoder()
        u.feed([0, 0, 0, 0, 99, 0, 0, 0, 0])
        #expect(throws: FrameDecoder.DecodeError.unknownKind(99)) { try u.next() }
    }

    @Test func truncatedPayloadsThrowInsteadOfTrapping() {
        let full = MountRequest(serial: "vol-abc", overlaySerial: "ovl-abc", mountPath: "/data", mode: .overlay).encode()
        for n in 0..<full.count {
            #expect(throws: WireError.self) { try MountRequest(decoding: Array(full[..<n])) }
        }
        #expect(throws: WireError.self) { try MountRequest(decoding: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]) }
    }
}
