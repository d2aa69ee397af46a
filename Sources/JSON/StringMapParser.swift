extension JSON {
    /// The string-valued members of a JSON object (other members are left out); nil when the text
    /// is not valid JSON or not an object — the same answer as `parse` followed by picking the
    /// strings, duplicate keys rejected. Stored maps (`{"PORT":"8080"}`) take a fast path that
    /// reads them without jansson; anything it does not handle (escapes, non-ASCII text, other
    /// value types, malformed text) goes through `parse`.
    public static func parseStringMap(_ text: UnsafeRawBufferPointer) -> [String: String]? {
        if let m = PlainStringMap.read(text) { return m }
        guard case .object(let o)? = try? parse(Array(text)) else { return nil }
        var m: [String: String] = [:]
        for i in 0..<o.keys.count { if case .string(let s) = o.values[i] { m[o.keys[i]] = s } }
        return m
    }

    public static func parseStringMap(_ text: String) -> [String: String]? {
        var text = text
        return text.withUTF8 { parseStringMap(UnsafeRawBufferPointer($0)) }
    }
}

/// `{ "key": "value", ... }` where every key and value is printable ASCII without escapes,
/// with JSON whitespace anywhere between tokens. Returns nil (let jansson decide) on anything else.
enum PlainStringMap {
    static func read(_ t: UnsafeRawBufferPointer) -> [String: String]? {
        var i = 0
        let n = t.count
        func skipSpace() {
            while i < n, t[i] == 0x20 || t[i] == 0x09 || t[i] == 0x0A || t[i] == 0x0D { i += 1 }
        }
        /// A plain string token at `i` (which must be a quote): its bytes, or nil.
        func plainString() -> String? {
            guard i < n, t[i] == UInt8(ascii: "\"") else { return nil }
            let start = i + 1
            var j = start
            while j < n {
                let c = t[j]
                if c == UInt8(ascii: "\"") { break }
                if c < 0x20 || c >= 0x7F || c == UInt8(ascii: "\\") { return nil }
                j += 1
            }
            guard j < n else { return nil }
            i = j + 1
            return String(decoding: UnsafeRawBufferPointer(rebasing: t[start..<j]), as: UTF8.self)
        }
        skipSpace()
        guard i < n, t[i] == UInt8(ascii: "{") else { return nil }
        i += 1
        var m: [String: String] = [:]
        skipSpace()
        if i < n, t[i] == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipSpace()
                guard let k = plainString() else { return nil }
                skipSpace()
                guard i < n, t[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                skipSpace()
                guard let v = plainString() else { return nil }
                // A duplicate key makes the document invalid for us; jansson says so precisely.
                guard m.updateValue(v, forKey: k) == nil else { return nil }
                skipSpace()
                guard i < n else { return nil }
                if t[i] == UInt8(ascii: ",") { i += 1; continue }
                if t[i] == UInt8(ascii: "}") { i += 1; break }
                return nil
            }
        }
        skipSpace()
        return i == n ? m : nil
    }
}
