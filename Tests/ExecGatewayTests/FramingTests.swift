@testable import ExecGateway
import Foundation
import Testing

@Suite("Exec gateway: RFC 6455 framing")
struct FramingTests {
    @Test("an unmasked client frame fails the connection with 1002")
    func unmasked() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try h.client()
        try c.upgrade()
        c.sendFrame(opcode: 1, Array(#"{"command":["echo"]}"#.utf8), masked: false)
        let frames = try c.readUntilClose()
        #expect(frames.map(\.opcode) == [8])
        #expect(frames.first?.closeCode == 1002)
        #expect(c.readsEOF())
        #expect(h.backend.opened.isEmpty)
    }

    @Test("a protocol error mid-session cancels the session")
    func violationCancels() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["cat"]}"#)
        #expect(GatewayHarness.eventually { h.backend.opened.count == 1 })
        c.sendFrame(opcode: 2, [1, 2, 3], masked: false)
        #expect(try c.readUntilClose().last?.closeCode == 1002)
        #expect(GatewayHarness.eventually { h.backend.cancels == 1 })
    }

    @Test("reserved bits, reserved opcodes and bad control frames are 1002", arguments: [
        "rsv", "opcode3", "opcode11", "fragmentedPing", "longPing", "strayContinuation", "closeOneByte", "closeBadCode",
    ])
    func protocolErrors(kind: String) throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try h.client()
        try c.upgrade()
        switch kind {
        case "rsv": c.sendFrame(opcode: 1, Array("{}".utf8), rsv: 4)
        case "opcode3": c.sendFrame(opcode: 3, [])
        case "opcode11": c.sendFrame(opcode: 11, [])
        case "fragmentedPing": c.sendFrame(opcode: 9, [1], fin: false)
        case "longPing": c.sendFrame(opcode: 9, [UInt8](repeating: 7, count: 126))
        case "strayContinuation": c.sendFrame(opcode: 0, Array("{}".utf8))
        case "closeOneByte": c.sendFrame(opcode: 8, [3])
        default: c.sendFrame(opcode: 8, [0x03, 0xEC])  // 1004 is reserved
        }
        #expect(try c.readUntilClose().last?.closeCode == 1002)
    }

    @Test("text that is not UTF-8 is 1007")
    func invalidUTF8() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try h.client()
        try c.upgrade()
        c.sendFrame(opcode: 1, [0x7B, 0xC3, 0x28, 0x7D])
        #expect(try c.readUntilClose().last?.closeCode == 1007)
    }

    @Test("a fragmented first message is reassembled, with a ping in between")
    func fragmented() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try h.client()
        try c.upgrade()
        c.sendFrame(opcode: 1, Array(#"{"command":"#.utf8), fin: false)
        c.sendFrame(opcode: 0, Array(#"["echo","frag"#.utf8), fin: false)
        c.sendFrame(opcode: 9, Array("mid".utf8))
        c.sendFrame(opcode: 0, Array(#"mented"]}"#.utf8), fin: true)
        let frames = try c.readUntilClose()
        #expect(frames.map(\.opcode) == [10, 2, 1, 8])
        #expect(frames.first?.text == "mid")
        #expect(frames.dropFirst().first?.text == "fragmented\n")
    }

    @Test("ping gets a pong with the same payload, before and during a session")
    func pingPong() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try h.client()
        try c.upgrade()
        c.sendFrame(opcode: 9, Array("before".utf8))
        #expect(try c.readFrame() == .init(fin: true, opcode: 10, payload: Array("before".utf8)))
        c.sendText(#"{"command":["cat"]}"#)
        c.sendFrame(opcode: 9, [0, 1, 2, 255])
        #expect(try c.readFrame() == .init(fin: true, opcode: 10, payload: [0, 1, 2, 255]))
        c.sendFrame(opcode: 10, Array("unsolicited pong is ignored".utf8))
        c.sendText("EOF")
        #expect(try c.readUntilClose().first?.text == #"{"exitCode":0}"#)
    }

    @Test("a message over 1 MiB is 1009 (one frame, or fragments adding up)")
    func tooBig() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["cat"]}"#)
        c.sendBinary([UInt8](repeating: 0x61, count: (1 << 20) + 1))
        #expect(try c.readUntilClose().last?.closeCode == 1009)
        #expect(GatewayHarness.eventually { h.backend.cancels == 1 })

        let d = try WebSocketTestClient.session(h.path, request: #"{"command":["cat"]}"#)
        d.sendFrame(opcode: 2, [UInt8](repeating: 0x62, count: 1 << 19), fin: false)
        d.sendFrame(opcode: 0, [UInt8](repeating: 0x62, count: 1 << 19), fin: false)
        d.sendFrame(opcode: 0, [0x62], fin: true)
        #expect(try d.readUntilClose().last?.closeCode == 1009)
    }

    @Test("a message of exactly 1 MiB is accepted")
    func exactlyOneMiB() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try WebSocketTestClient.session(h.path, request: #"{"command":["cat"]}"#)
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        c.sendBinary(payload)
        let echoed = try c.readFrame()
        #expect(echoed?.opcode == 2 && echoed?.payload == payload)
    }

    @Test("the first frame may arrive in the same write as the handshake")
    func pipelinedFirstMessage() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try h.client()
        let request = Array(#"{"command":["echo","early"]}"#.utf8)
        let mask: [UInt8] = [1, 2, 3, 4]
        var frame: [UInt8] = [0x81, 0x80 | UInt8(request.count)] + mask
        frame += request.enumerated().map { $0.element ^ mask[$0.offset & 3] }
        c.send(WebSocketTestClient.upgradeRequest(target: "/instances/box/exec") + frame)
        #expect(try c.readHTTPReply().status == 101)
        #expect(try c.readFrame()?.text == "early\n")
    }
}
