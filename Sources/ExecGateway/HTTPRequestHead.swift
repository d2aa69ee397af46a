/// The request line and headers of an HTTP/1.1 request, as the gateway reads them before the
/// upgrade. Header names are lowercased; values are trimmed of spaces and tabs.
struct HTTPRequestHead: Sendable, Equatable {
    var method: String
    /// The raw request-target (still percent-encoded, query included).
    var target: String
    var version: String
    var headers: [(name: String, value: String)]

    /// Largest head accepted (request line + headers + the blank line).
    static let maxSize = 16 * 1024

    /// The value of header `name` (case-insensitive); repeated headers joined with ", ".
    func header(_ name: String) -> String? {
        let key = name.lowercased()
        let values = headers.filter { $0.name == key }.map(\.value)
        return values.isEmpty ? nil : values.joined(separator: ", ")
    }

    /// Where the head ends in `buffer`: the index just past `\r\n\r\n`, nil if not there yet.
    static func endIndex(in buffer: [UInt8]) -> Int? {
        guard buffer.count >= 4 else { return nil }
        for i in 0...(buffer.count - 4)
        where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
            return i + 4
        }
        return nil
    }

    /// Parses the head (without the final blank line's `\r\n\r\n` or with it).
    static func parse(_ bytes: ArraySlice<UInt8>) throws(ExecHTTPError) -> HTTPRequestHead {
        var lines: [ArraySlice<UInt8>] = []
        var lineStart = bytes.startIndex
        var i = bytes.startIndex
        while i < bytes.endIndex {
            if bytes[i] == 10 {
                guard i > lineStart, bytes[i - 1] == 13 else {
                    throw .invalidRequest("HTTP lines must end with CRLF")
                }
                lines.append(bytes[lineStart..<(i - 1)])
                lineStart = i + 1
            }
            i += 1
        }
        if lineStart < bytes.endIndex { lines.append(bytes[lineStart..<bytes.endIndex]) }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        guard let requestLine = lines.first else { throw .invalidRequest("empty HTTP request") }

        let parts = requestLine.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty }) else {
            throw .invalidRequest("malformed HTTP request line: expected METHOD TARGET HTTP/1.1")
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = String(decoding: parts[1], as: UTF8.self)
        let version = String(decoding: parts[2], as: UTF8.self)
        guard method.utf8.allSatisfy(isTokenByte) else { throw .invalidRequest("malformed HTTP method") }
        guard version == "HTTP/1.1" else {
            throw .invalidRequest("WebSocket upgrades need HTTP/1.1 (got \(version))")
        }

        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let first = line.first, first != 32, first != 9 else {
                throw .invalidRequest("folded HTTP header lines are not supported")
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else {
                throw .invalidRequest("malformed HTTP header line (no name: value)")
            }
            let name = line[line.startIndex..<colon]
            guard name.allSatisfy(isTokenByte) else { throw .invalidRequest("malformed HTTP header name") }
            var value = line[(colon + 1)...]
            while let f = value.first, f == 32 || f == 9 { value.removeFirst() }
            while let l = value.last, l == 32 || l == 9 { value.removeLast() }
            headers.append((String(decoding: name, as: UTF8.self).lowercased(), String(decoding: value, as: UTF8.self)))
        }
        return HTTPRequestHead(method: method, target: target, version: version, headers: headers)
    }

    static func == (a: HTTPRequestHead, b: HTTPRequestHead) -> Bool {
        a.method == b.method && a.target == b.target && a.version == b.version
            && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.value) == b.headers.map(\.value)
    }
}

/// RFC 9110 `tchar`.
private func isTokenByte(_ c: UInt8) -> Bool {
    switch c {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    default:
        return Array("!#$%&'*+-.^_`|~".utf8).contains(c)
    }
}
