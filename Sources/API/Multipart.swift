import FastCGI

/// A streaming `multipart/form-data` reader: small fields are kept in memory, file parts are
/// handed to a sink chunk by chunk, so archives of any size never sit in memory.
struct MultipartReader {
    let boundary: [UInt8]
    let maxFieldBytes = 64 * 1024

    /// The boundary parameter of a multipart content type, or nil.
    static func boundary(fromContentType ct: String) -> String? {
        guard ct.lowercased().hasPrefix("multipart/form-data") else { return nil }
        for part in ct.split(separator: ";").dropFirst() {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0].trimmingSpaces().lowercased() == "boundary" else { continue }
            var v = kv[1].trimmingSpaces()
            if v.hasPrefix("\"") && v.hasSuffix("\"") && v.count >= 2 { v = String(v.dropFirst().dropLast()) }
            return v.isEmpty || v.utf8.count > 200 ? nil : v
        }
        return nil
    }

    struct PartHeader {
        var name: String
        var filename: String?
    }

    enum Failure: Error { case malformed(String) }

    /// Reads every part. `field` gets complete small fields; `file` gets chunks of parts with a
    /// filename (or named `content`), then a final call with `nil` at the end of each file part.
    func read(from ex: any Exchange, field: (String, String) throws -> Void,
              file: (PartHeader, [UInt8]?) throws -> Void) throws {
        var buf: [UInt8] = []
        var eof = false
        func fill() -> Bool {
            if eof { return false }
            let chunk = ex.readBody(max: 256 * 1024)
            if chunk.isEmpty { eof = true; return false }
            buf += chunk
            return true
        }
        let first = Array("--".utf8) + boundary
        let delim = Array("\r\n--".utf8) + boundary
        // Preamble up to the first boundary line.
        while find(first, in: buf, from: 0) == nil { if !fill() { throw Failure.malformed("no opening boundary") } }
        let start = find(first, in: buf, from: 0)!
        buf.removeFirst(start + first.count)
        while true {
            while buf.count < 2 { if !fill() { throw Failure.malformed("truncated after boundary") } }
            if buf[0] == UInt8(ascii: "-") && buf[1] == UInt8(ascii: "-") { return }
            guard buf[0] == 13, buf[1] == 10 else { throw Failure.malformed("bad boundary line") }
            buf.removeFirst(2)
            let headEnd = Array("\r\n\r\n".utf8)
            while find(headEnd, in: buf, from: 0) == nil {
                if buf.count > 16 * 1024 { throw Failure.malformed("part headers too large") }
                if !fill() { throw Failure.malformed("truncated part headers") }
            }
            let he = find(headEnd, in: buf, from: 0)!
            let header = try parseHeaders(String(decoding: buf[0..<he], as: UTF8.self))
            buf.removeFirst(he + 4)
            let isFile = header.filename != nil || header.name == "content"
            var fieldBytes: [UInt8] = []
            while true {
                if let d = find(delim, in: buf, from: 0) {
                    if isFile { try file(header, Array(buf[0..<d])); try file(header, nil) } else {
                        fieldBytes += buf[0..<d]
                        if fieldBytes.count > maxFieldBytes { throw Failure.malformed("field \(header.name) too large") }
                        try field(header.name, String(decoding: fieldBytes, as: UTF8.self))
                    }
                    buf.removeFirst(d + delim.count)
                    break
                }
                // Hand over everything that cannot be the start of a delimiter.
                let keep = min(buf.count, delim.count - 1)
                let ready = buf.count - keep
                if ready > 0 {
                    if isFile { try file(header, Array(buf[0..<ready])) } else {
                        fieldBytes += buf[0..<ready]
                        if fieldBytes.count > maxFieldBytes { throw Failure.malformed("field \(header.name) too large") }
                    }
                    buf.removeFirst(ready)
                }
                if !fill() { throw Failure.malformed("truncated part \(header.name)") }
            }
        }
    }

    func parseHeaders(_ text: String) throws -> PartHeader {
        var name: String? = nil
        var filename: String? = nil
        for line in text.split(separator: "\r\n") {
            let kv = line.split(separator: ":", maxSplits: 1)
            guard kv.count == 2, kv[0].lowercased() == "content-disposition" else { continue }
            for p in kv[1].split(separator: ";").dropFirst() {
                let pv = p.split(separator: "=", maxSplits: 1)
                guard pv.count == 2 else { continue }
                var v = pv[1].trimmingSpaces()
                if v.hasPrefix("\"") && v.hasSuffix("\"") && v.count >= 2 { v = String(v.dropFirst().dropLast()) }
                switch pv[0].trimmingSpaces().lowercased() {
                case "name": name = v
                case "filename": filename = v
                default: break
                }
            }
        }
        guard let name else { throw Failure.malformed("part without a name") }
        return PartHeader(name: name, filename: filename)
    }
}

func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
    guard needle.count <= hay.count, let f = needle.first else { return nil }
    var i = from
    let last = hay.count - needle.count
    while i <= last {
        if hay[i] == f {
            var j = 1
            while j < needle.count && hay[i + j] == needle[j] { j += 1 }
            if j == needle.count { return i }
        }
        i += 1
    }
    return nil
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
