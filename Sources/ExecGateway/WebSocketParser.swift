/// A whole message or control frame from the client.
enum WebSocketInbound: Sendable, Equatable {
    case text([UInt8])
    case binary([UInt8])
    case ping([UInt8])
    case pong([UInt8])
    /// `code` is nil when the close frame had no payload.
    case close(code: UInt16?, reason: String)
}

/// Why the connection must be failed: the close code to send and a short reason.
struct WebSocketViolation: Error, Sendable, Equatable {
    var code: UInt16
    var reason: String
}

/// Incremental parser for client frames (RFC 6455 §5): checks masking, reserved bits and
/// opcodes, reassembles fragmented messages and enforces the message size limit as soon as a
/// frame header announces a too-large payload (nothing beyond the limit is buffered).
struct WebSocketParser: Sendable {
    /// Largest message (after reassembly) accepted; larger ones fail with 1009.
    let maxMessageSize: Int
    private var buffer: [UInt8] = []
    private var start = 0
    private var fragmentOpcode: WebSocketOpcode?
    private var fragments: [UInt8] = []

    init(maxMessageSize: Int = 1 << 20) { self.maxMessageSize = maxMessageSize }

    mutating func feed(_ bytes: ArraySlice<UInt8>) { buffer += bytes }

    /// The next message or control frame; nil when more bytes are needed.
    mutating func next() throws(WebSocketViolation) -> WebSocketInbound? {
        while true {
            let available = buffer.count - start
            guard available >= 2 else { compact(); return nil }
            let b0 = buffer[start], b1 = buffer[start + 1]
            let fin = b0 & 0x80 != 0
            guard b0 & 0x70 == 0 else { throw violation(WebSocketCloseCode.protocolError, "reserved bits set without a negotiated extension") }
            guard let opcode = WebSocketOpcode(rawValue: b0 & 0x0F) else {
                throw violation(WebSocketCloseCode.protocolError, "reserved opcode \(b0 & 0x0F)")
            }
            guard b1 & 0x80 != 0 else { throw violation(WebSocketCloseCode.protocolError, "client frames must be masked") }
            var length = UInt64(b1 & 0x7F)
            var headerSize = 2
            if length == 126 {
                guard available >= 4 else { compact(); return nil }
                length = UInt64(buffer[start + 2]) << 8 | UInt64(buffer[start + 3])
                headerSize = 4
            } else if length == 127 {
                guard available >= 10 else { compact(); return nil }
                length = 0
                for k in 0..<8 { length = length << 8 | UInt64(buffer[start + 2 + k]) }
                guard length >> 63 == 0 else { throw violation(WebSocketCloseCode.protocolError, "frame length has the high bit set") }
                headerSize = 10
            }
            if opcode.isControl {
                guard fin else { throw violation(WebSocketCloseCode.protocolError, "control frames must not be fragmented") }
                guard length <= 125 else { throw violation(WebSocketCloseCode.protocolError, "control frame payload over 125 bytes") }
            } else {
                if opcode == .continuation {
                    guard fragmentOpcode != nil else { throw violation(WebSocketCloseCode.protocolError, "continuation frame without a message to continue") }
                } else {
                    guard fragmentOpcode == nil else { throw violation(WebSocketCloseCode.protocolError, "new message before the fragmented one finished") }
                }
                let already = opcode == .continuation ? fragments.count : 0
                guard length <= UInt64(maxMessageSize - already) else {
                    throw violation(WebSocketCloseCode.messageTooBig, "message exceeds \(maxMessageSize) bytes")
                }
            }
            let total = headerSize + 4 + Int(length)
            guard available >= total else { compact(); return nil }

            let maskAt = start + headerSize
            let mask = (buffer[maskAt], buffer[maskAt + 1], buffer[maskAt + 2], buffer[maskAt + 3])
            var payload = Array(buffer[(maskAt + 4)..<(start + total)])
            for i in 0..<payload.count {
                switch i & 3 {
                case 0: payload[i] ^= mask.0
                case 1: payload[i] ^= mask.1
                case 2: payload[i] ^= mask.2
                default: payload[i] ^= mask.3
                }
            }
            start += total
            if start == buffer.count { buffer.removeAll(keepingCapacity: true); start = 0 }

            switch opcode {
            case .ping: return .ping(payload)
            case .pong: return .pong(payload)
            case .close: return try closeFrame(payload)
            case .text, .binary:
                if fin { return try message(opcode, payload) }
                fragmentOpcode = opcode
                fragments = payload
            case .continuation:
                fragments += payload
                if fin, let op = fragmentOpcode {
                    let whole = fragments
                    fragmentOpcode = nil
                    fragments = []
                    return try message(op, whole)
                }
            }
        }
    }

    private func message(_ opcode: WebSocketOpcode, _ payload: [UInt8]) throws(WebSocketViolation) -> WebSocketInbound {
        if opcode == .binary { return .binary(payload) }
        guard String(validating: payload, as: UTF8.self) != nil else {
            throw violation(WebSocketCloseCode.invalidPayload, "text message is not valid UTF-8")
        }
        return .text(payload)
    }

    private func closeFrame(_ payload: [UInt8]) throws(WebSocketViolation) -> WebSocketInbound {
        if payload.isEmpty { return .close(code: nil, reason: "") }
        guard payload.count >= 2 else { throw violation(WebSocketCloseCode.protocolError, "close frame with a 1-byte payload") }
        let code = UInt16(payload[0]) << 8 | UInt16(payload[1])
        guard WebSocketCloseCode.isValidReceived(code) else { throw violation(WebSocketCloseCode.protocolError, "invalid close code \(code)") }
        guard let reason = String(validating: payload[2...], as: UTF8.self) else {
            throw violation(WebSocketCloseCode.invalidPayload, "close reason is not valid UTF-8")
        }
        return .close(code: code, reason: reason)
    }

    private mutating func compact() {
        if start > 0 { buffer.removeFirst(start); start = 0 }
    }

    private func violation(_ code: UInt16, _ reason: String) -> WebSocketViolation {
        WebSocketViolation(code: code, reason: reason)
    }
}
