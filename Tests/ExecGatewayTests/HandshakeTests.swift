@testable import ExecGateway
import Foundation
import Testing

@Suite("Exec gateway: HTTP and the opening handshake")
struct HandshakeTests {
    /// RFC 6455 §1.3's example (also `openssl sha1 -binary | base64` of key + GUID).
    static let rfcAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    @Test("RFC 6455's example key gets the example accept value")
    func acceptValue() {
        #expect(WebSocketHandshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == Self.rfcAccept)
        #expect(WebSocketHandshake.acceptValue(forKey: "x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk=")
    }

    @Test("a valid upgrade gets 101 with the accept header")
    func switchingProtocols() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try h.client()
        c.send(WebSocketTestClient.upgradeRequest(target: "/instances/box/exec?tty=1", replacing: ["Connection": "keep-alive, Upgrade"]))
        let reply = try c.readHTTPReply()
        #expect(reply.status == 101)
        #expect(reply.headers["upgrade"]?.lowercased() == "websocket")
        #expect(reply.headers["connection"]?.lowercased() == "upgrade")
        #expect(reply.headers["sec-websocket-accept"] == Self.rfcAccept)
        #expect(h.backend.resolved == ["box"])
    }

    /// Sends `request`, expects a JSON error with `status` and `code`, and that no upgrade happened.
    func expectError(_ h: GatewayHarness, _ request: [UInt8], status: Int, code: String,
                     messageContains: String = "", sourceLocation: SourceLocation = #_sourceLocation) throws -> WebSocketTestClient.HTTPReply {
        let c = try h.client()
        c.send(request)
        let reply = try c.readHTTPReply()
        #expect(reply.status == status, sourceLocation: sourceLocation)
        #expect(reply.headers["content-type"] == "application/json", sourceLocation: sourceLocation)
        #expect(reply.headers["connection"] == "close", sourceLocation: sourceLocation)
        #expect(reply.headers["sec-websocket-accept"] == nil, sourceLocation: sourceLocation)
        let json = reply.json
        #expect(json?["code"] as? String == code, sourceLocation: sourceLocation)
        let message = json?["message"] as? String ?? ""
        #expect(messageContains.isEmpty || message.contains(messageContains), "message: \(message)", sourceLocation: sourceLocation)
        #expect(c.readsEOF(), "the server must close the connection after an error", sourceLocation: sourceLocation)
        return reply
    }

    @Test("backend lookup errors come back as JSON before any upgrade")
    func resolveErrors() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/nope/exec"),
                            status: 404, code: "not_found", messageContains: "instance nope not found")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/amb/exec"),
                            status: 409, code: "ambiguous", messageContains: "matches 2 instances")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/stopped/exec"),
                            status: 409, code: "invalid_state", messageContains: "instance must be running (current state: Stopped)")
        #expect(h.backend.opened.isEmpty)
    }

    @Test("messages are escaped JSON")
    func escapedMessage() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let reply = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/a%22b%5Cc%0A/exec"),
                                    status: 404, code: "not_found")
        #expect(reply.json?["message"] as? String == "instance a\"b\\c\n not found")
    }

    @Test("other paths are 404, other methods 405 with Allow: GET")
    func routing() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/box/logs"), status: 404, code: "not_found",
                            messageContains: "GET /instances/{id}/exec")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/box/sub/exec"), status: 404, code: "not_found")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances//exec"), status: 404, code: "not_found")
        let reply = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/box/exec", method: "POST"),
                                    status: 405, code: "method_not_allowed", messageContains: "GET")
        #expect(reply.headers["allow"] == "GET")
        #expect(h.backend.resolved.isEmpty)
    }

    @Test("bad handshake headers are 400 invalid_request naming the header")
    func badHandshakes() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let t = "/instances/box/exec"
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: t, replacing: ["Upgrade": nil]),
                            status: 400, code: "invalid_request", messageContains: "Upgrade header")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: t, replacing: ["Upgrade": "h2c"]),
                            status: 400, code: "invalid_request", messageContains: "Upgrade header")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: t, replacing: ["Connection": "keep-alive"]),
                            status: 400, code: "invalid_request", messageContains: "Connection header")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: t, replacing: ["Sec-WebSocket-Version": "8"]),
                            status: 400, code: "invalid_request", messageContains: "Sec-WebSocket-Version")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: t, key: "c2hvcnQ="),
                            status: 400, code: "invalid_request", messageContains: "Sec-WebSocket-Key")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: t, replacing: ["Sec-WebSocket-Key": nil]),
                            status: 400, code: "invalid_request", messageContains: "Sec-WebSocket-Key")
        // Upper-case header names and values are fine.
        let c = try h.client()
        c.send(Array("GET \(t) HTTP/1.1\r\nHOST: x\r\nUPGRADE: WebSocket\r\nCONNECTION: UPGRADE\r\nSEC-WEBSOCKET-VERSION: 13\r\nSEC-WEBSOCKET-KEY: \(WebSocketTestClient.rfcKey)\r\nX-AUTH-SUBJECT: t\r\n\r\n".utf8))
        #expect(try c.readHTTPReply().status == 101)
    }

    @Test("the instance reference is percent-decoded; a decoded slash or NUL is refused")
    func urlDecoding() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        let c = try h.client()
        try c.upgrade("my%2Dbox")
        #expect(h.backend.resolved == ["my-box"])
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/a%2Fb/exec"),
                            status: 400, code: "invalid_request", messageContains: "'/'")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/a%00b/exec"),
                            status: 400, code: "invalid_request", messageContains: "NUL")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/a%zzb/exec"),
                            status: 400, code: "invalid_request", messageContains: "percent-escape")
        #expect(h.backend.resolved == ["my-box"])
    }

    @Test("malformed, oversized and slow request heads are 400")
    func badHeads() throws {
        var limits = ExecServer.Limits()
        limits.headSeconds = 0.3
        let h = try GatewayHarness(limits: limits)
        defer { h.stop() }
        _ = try expectError(h, Array("GET /instances/box/exec HTTP/1.0\r\n\r\n".utf8), status: 400, code: "invalid_request",
                            messageContains: "HTTP/1.1")
        _ = try expectError(h, Array("GET /instances/box/exec\r\n\r\n".utf8), status: 400, code: "invalid_request",
                            messageContains: "request line")
        _ = try expectError(h, WebSocketTestClient.upgradeRequest(target: "/instances/box/exec", replacing: ["X-Big": String(repeating: "a", count: 17_000)]),
                            status: 400, code: "invalid_request", messageContains: "16 KiB")
        let started = Date()
        _ = try expectError(h, Array("GET /instances/box/exec HTTP/1.1\r\nHost: x\r\n".utf8), status: 400, code: "invalid_request",
                            messageContains: "not received within")
        #expect(Date().timeIntervalSince(started) < 3)
        #expect(h.backend.resolved.isEmpty)
    }
}
