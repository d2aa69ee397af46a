/// RFC 6455 frame opcodes the gateway knows.
enum WebSocketOpcode: UInt8, Sendable {
    case continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA

    var isControl: Bool { rawValue & 0x8 != 0 }
}

/// Close status codes (RFC 6455 §7.4.1) the gateway sends.
enum WebSocketCloseCode {
    static let normal: UInt16 = 1000
    static let protocolError: UInt16 = 1002
    static let invalidPayload: UInt16 = 1007
    static let policyViolation: UInt16 = 1008
    static let messageTooBig: UInt16 = 1009
    static let internalError: UInt16 = 1011

    /// Whether a peer may send `code` in a close frame (§7.4.1–7.4.2).
    static func isValidReceived(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 3000...4999: return true
        default: return false
        }
    }
}

/// Server-to-client frames: FIN set, unmasked.
enum WebSocketFrame {
    static func encode(_ opcode: WebSocketOpcode, _ payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + 10)
        out.append(0x80 | opcode.rawValue)
        let n = payload.count
        if n < 126 {
            out.append(UInt8(n))
        } else if n <= 0xFFFF {
            out.append(126)
            out.append(UInt8(n >> 8)); out.append(UInt8(n & 0xFF))
        } else {
            out.append(127)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: UInt64(n) >> UInt64(shift))) }
        }
        out += payload
        return out
    }

    /// A close frame's payload: the code (big-endian) and a UTF-8 reason cut to fit 125 bytes.
    static func closePayload(code: UInt16, reason: String) -> [UInt8] {
        var r = Array(reason.utf8.prefix(123))
        while !r.isEmpty && String(validating: r, as: UTF8.self) == nil { r.removeLast() }
        return [UInt8(code >> 8), UInt8(code & 0xFF)] + r
    }
}
