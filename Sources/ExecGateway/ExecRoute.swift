/// The one route the gateway serves: `GET /instances/{ref}/exec` (a query string is ignored).
enum ExecRoute {
    /// The URL-decoded instance reference of `method target`, or the HTTP error to answer:
    /// 404 for any other path, 405 for another method, 400 for a bad `ref` encoding.
    static func instanceRef(method: String, target: String) throws(ExecHTTPError) -> String {
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let prefix = "/instances/", suffix = "/exec"
        guard path.hasPrefix(prefix), path.hasSuffix(suffix), path.utf8.count > prefix.utf8.count + suffix.utf8.count else {
            throw .notFound("no such endpoint: \(path.isEmpty ? target : path) (the gateway serves only GET /instances/{id}/exec)")
        }
        let raw = path.dropFirst(prefix.count).dropLast(suffix.count)
        guard !raw.contains("/") else {
            throw .notFound("no such endpoint: \(path) (the gateway serves only GET /instances/{id}/exec)")
        }
        guard method == "GET" else {
            throw ExecHTTPError(status: 405, code: "method_not_allowed",
                                message: "method \(method) is not allowed on \(path): open the exec WebSocket with GET")
        }
        return try percentDecode(String(raw))
    }

    /// Decodes `%XX` escapes. The result must be UTF-8 without `/` or NUL.
    static func percentDecode(_ text: String) throws(ExecHTTPError) -> String {
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%") {
                guard i + 2 < bytes.count, let hi = hexValue(bytes[i + 1]), let lo = hexValue(bytes[i + 2]) else {
                    throw .invalidRequest("malformed percent-escape in the instance reference: use %XX with two hex digits")
                }
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        guard !out.contains(UInt8(ascii: "/")), !out.contains(0) else {
            throw .invalidRequest("the instance reference must not contain '/' or NUL")
        }
        // nginx resolves dot segments before choosing a location: refuse them as the API does.
        guard out != [UInt8(ascii: ".")], out != [UInt8(ascii: "."), UInt8(ascii: ".")] else {
            throw .invalidRequest("the instance reference must not be '.' or '..'")
        }
        guard let s = String(validating: out, as: UTF8.self) else {
            throw .invalidRequest("the instance reference is not valid UTF-8 after percent-decoding")
        }
        return s
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - 48
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - 97 + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - 65 + 10
        default: return nil
        }
    }
}
