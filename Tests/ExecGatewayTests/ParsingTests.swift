import AgentProtocol
@testable import ExecGateway
import Testing

@Suite("Exec gateway: parsers and codecs")
struct ParsingTests {
    @Test("base64 round-trips and decodes strictly")
    func base64() {
        for n in 0..<20 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 * 37 + 11) }
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
        }
        #expect(Base64.encode(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(Base64.encode(Array("fo".utf8)) == "Zm8=")
        #expect(Base64.decode("Zm8=") == Array("fo".utf8))
        #expect(Base64.decode("Zm8") == nil)
        #expect(Base64.decode("Zm=8") == nil)
        #expect(Base64.decode("Zm8-") == nil)
        #expect(Base64.decode("dGhlIHNhbXBsZSBub25jZQ==")?.count == 16)
    }

    @Test("request heads: headers are case-insensitive, repeated ones joined; bad lines refused")
    func requestHead() throws {
        let text = "GET /instances/x/exec?a=b HTTP/1.1\r\nHost: h\r\nX-A:  1 \r\nx-a: 2\r\n\r\n"
        let head = try HTTPRequestHead.parse(Array(text.utf8)[...])
        #expect(head.method == "GET" && head.target == "/instances/x/exec?a=b")
        #expect(head.header("x-A") == "1, 2")
        #expect(head.header("host") == "h")
        #expect(head.header("missing") == nil)
        #expect(HTTPRequestHead.endIndex(in: Array(text.utf8)) == text.utf8.count)
        #expect(throws: ExecHTTPError.self) { try HTTPRequestHead.parse(Array("GET / HTTP/1.1\nHost: h\n\n".utf8)[...]) }
        #expect(throws: ExecHTTPError.self) { try HTTPRequestHead.parse(Array("GET / HTTP/1.1\r\n folded\r\n\r\n".utf8)[...]) }
        #expect(throws: ExecHTTPError.self) { try HTTPRequestHead.parse(Array("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n".utf8)[...]) }
    }

    @Test("routes and percent-decoding")
    func routes() throws {
        #expect(try ExecRoute.instanceRef(method: "GET", target: "/instances/my%2dbox/exec?x=%2F") == "my-box")
        #expect(try ExecRoute.instanceRef(method: "GET", target: "/instances/%C3%A9t%C3%A9/exec") == "été")
        #expect(throws: ExecHTTPError.self) { try ExecRoute.instanceRef(method: "GET", target: "/instances/%C3/exec") }
        do {
            _ = try ExecRoute.instanceRef(method: "DELETE", target: "/instances/x/exec")
            Issue.record("DELETE must be refused")
        } catch {
            #expect(error.status == 405)
        }
        do {
            _ = try ExecRoute.instanceRef(method: "DELETE", target: "/health")
            Issue.record("unknown paths must be refused")
        } catch {
            #expect(error.status == 404)
        }
    }

    @Test("the resize message shape")
    func resizeShape() {
        #expect(ExecRequest.resize(Array(#"{"resize":{"rows":1,"cols":65535}}"#.utf8))! == (1, 65535))
        #expect(ExecRequest.resize(Array(#"{"resize":{"rows":1,"cols":65536}}"#.utf8)) == nil)
        #expect(ExecRequest.resize(Array(#"{"resize":{"rows":1}}"#.utf8)) == nil)
        #expect(ExecRequest.resize(Array(#"{"resize":{"rows":1,"cols":2,"x":3}}"#.utf8)) == nil)
        #expect(ExecRequest.resize(Array("resize".utf8)) == nil)
    }

    @Test("request defaults")
    func requestDefaults() throws {
        let r = try ExecRequest.parse(Array("{}".utf8))
        #expect(r.start == ExecStart(command: ["/bin/sh"]))
        #expect(r.waitForAgent == 5)
        #expect(try ExecRequest.parse(Array(#"{"wait_for_agent":0.5,"rows":24.0}"#.utf8)).waitForAgent == 0.5)
        #expect(try ExecRequest.parse(Array(#"{"rows":24.0}"#.utf8)).start.rows == 24)
    }

    @Test("frames parse when fed one byte at a time")
    func incrementalParse() throws {
        var frames: [UInt8] = []
        let mask: [UInt8] = [9, 8, 7, 6]
        func add(_ b0: UInt8, _ payload: [UInt8]) {
            frames.append(b0)
            if payload.count < 126 { frames.append(0x80 | UInt8(payload.count)) } else {
                frames += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
            }
            frames += mask + payload.enumerated().map { $0.element ^ mask[$0.offset & 3] }
        }
        let big = [UInt8](repeating: 5, count: 300)
        add(0x02, Array("ab".utf8))      // binary, not final
        add(0x89, Array("p".utf8))       // ping between fragments
        add(0x80, big)                   // final continuation
        add(0x88, [0x03, 0xE8] + Array("bye".utf8))
        var parser = WebSocketParser()
        var got: [WebSocketInbound] = []
        for b in frames {
            parser.feed([b][...])
            while let m = try parser.next() { got.append(m) }
        }
        #expect(got == [.ping(Array("p".utf8)), .binary(Array("ab".utf8) + big), .close(code: 1000, reason: "bye")])
    }

    @Test("server frames use the shortest length encoding")
    func encode() {
        #expect(WebSocketFrame.encode(.text, Array("hi".utf8)) == [0x81, 2, 0x68, 0x69])
        #expect(Array(WebSocketFrame.encode(.binary, [UInt8](repeating: 0, count: 126)).prefix(4)) == [0x82, 126, 0, 126])
        #expect(Array(WebSocketFrame.encode(.binary, [UInt8](repeating: 0, count: 65536)).prefix(10)) == [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0])
        #expect(WebSocketFrame.closePayload(code: 1000, reason: "") == [0x03, 0xE8])
        #expect(WebSocketFrame.closePayload(code: 1000, reason: String(repeating: "é", count: 100)).count <= 125)
    }

    @Test("durations in log lines")
    func durations() {
        #expect(formatSeconds(0) == "0.000s")
        #expect(formatSeconds(1.2345) == "1.235s" || formatSeconds(1.2345) == "1.234s")
        #expect(formatSeconds(61.05) == "61.050s")
    }
}
