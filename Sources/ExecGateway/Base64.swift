/// Standard base64 (RFC 4648 §4, `+/`, padded) for the WebSocket handshake: decoding the
/// client's `Sec-WebSocket-Key` and encoding `Sec-WebSocket-Accept`.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Encodes with `=` padding.
    static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let rest = bytes.count - i
            var n = UInt32(bytes[i]) << 16
            if rest > 1 { n |= UInt32(bytes[i + 1]) << 8 }
            if rest > 2 { n |= UInt32(bytes[i + 2]) }
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(rest > 1 ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            out.append(rest > 2 ? alphabet[Int(n & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes strictly: the length is a multiple of 4, padding only at the end, no other
    /// characters. Nil when the text is not canonical base64.
    static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var padding = 0
        if chars.last == UInt8(ascii: "=") { padding += 1 }
        if chars.count >= 2 && chars[chars.count - 2] == UInt8(ascii: "=") { padding += 1 }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 4 * 3)
        var n: UInt32 = 0
        for (i, c) in chars.enumerated() {
            let v: UInt32
            if i >= chars.count - padding {
                v = 0
            } else if let d = value(c) {
                v = d
            } else {
                return nil
            }
            n = n << 6 | v
            if i % 4 == 3 {
                out.append(UInt8(n >> 16 & 255)); out.append(UInt8(n >> 8 & 255)); out.append(UInt8(n & 255))
                n = 0
            }
        }
        out.removeLast(padding)
        return out
    }

    private static func value(_ c: UInt8) -> UInt32? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return UInt32(c - 65)
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return UInt32(c - 97 + 26)
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c - 48 + 52)
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }
}
