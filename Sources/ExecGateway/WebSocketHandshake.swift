import Digest

/// The server side of the RFC 6455 opening handshake.
enum WebSocketHandshake {
    /// The GUID RFC 6455 §1.3 appends to the client's key.
    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// Checks the upgrade headers and returns the client's `Sec-WebSocket-Key`, or a 400
    /// naming the header that is wrong.
    static func validate(_ head: HTTPRequestHead) throws(ExecHTTPError) -> String {
        let upgrade = tokens(head.header("Upgrade"))
        guard upgrade.contains("websocket") else {
            throw .invalidRequest("Upgrade header must be \"websocket\" (got \(quoted(head.header("Upgrade")))): connect with a WebSocket client")
        }
        guard tokens(head.header("Connection")).contains("upgrade") else {
            throw .invalidRequest("Connection header must contain \"Upgrade\" (got \(quoted(head.header("Connection")))); a proxy must forward it")
        }
        guard head.header("Sec-WebSocket-Version") == "13" else {
            throw .invalidRequest("Sec-WebSocket-Version must be 13 (got \(quoted(head.header("Sec-WebSocket-Version"))))")
        }
        guard let key = head.header("Sec-WebSocket-Key"), let raw = Base64.decode(key), raw.count == 16 else {
            throw .invalidRequest("Sec-WebSocket-Key must be the base64 encoding of 16 bytes (got \(quoted(head.header("Sec-WebSocket-Key"))))")
        }
        return key
    }

    /// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
    static func acceptValue(forKey key: String) -> String {
        Base64.encode(Digests.sha1(Array((key + guid).utf8)))
    }

    /// The `101 Switching Protocols` response (no extensions, no subprotocol).
    static func switchingProtocols(key: String) -> [UInt8] {
        Array(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: \(acceptValue(forKey: key))\r\n\r\n").utf8)
    }

    /// Comma-separated header tokens, trimmed and lowercased.
    private static func tokens(_ value: String?) -> [String] {
        guard let value else { return [] }
        return value.split(separator: ",").map { $0.trimmingSpaces.lowercased() }
    }

    private static func quoted(_ value: String?) -> String {
        guard let value else { return "none" }
        return "\"\(value.prefix(100))\""
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs.
    var trimmingSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return s
    }
}
