import FastCGI

/// A streaming `multipart/form-data` reader: small fields are kept in memory, file parts are
/// handed to a sink chunk by chunk, so archives of any size never sit in memory.
///
/// Every buffer is bounded and every byte is scanned a bounded number of times: the preamble
/// before the first boundary (`maxPreambleBytes`), each part's header block (`maxHeaderBytes`),
/// each field (`maxFieldBytes`) and the number of parts (`maxParts`). At most one file part
/// (one with a filename, or named `content`) is accepted; a second one is refused.
struct MultipartReader {
    let boundary: [UInt8]
    var maxFieldBytes = 64 * 1024
    var maxPreambleBytes = 64 * 1024
    var maxHeaderBytes = 8 * 1024
    var maxParts = 64
    var readChunk = 256 * 1024

    init(boundary: [UInt8]) { self.boundary = boundary }

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

    /// Why a body was refused; the message is safe to show to the client.
    enum Failure: Error { case malformed(String) }

    /// Counters of the work one `read` did (for tests: every byte is scanned a bounded number of times).
    struct Work { var bytesRead = 0; var bytesScanned = 0 }

    /// Reads every part. `field` gets complete small fields; `file` gets chunks of parts with a
    /// filename (or named `content`), then a final call with `nil` at the end of each file part.
    @discardableResult
    func read(from ex: any Exchange, field: (String, String) throws -> Void,
              file: (PartHeader, [UInt8]?) throws -> Void) throws -> Work {
        var work = Work()
        var buf: [UInt8] = []
        var eof = false
        func fill() -> Bool {
            if eof { return false }
            let chunk = ex.readBody(max: readChunk)
            if chunk.isEmpty { eof = true; return false }
            work.bytesRead += chunk.count
            buf += chunk
            return true
        }
        /// Finds `needle` in `buf`, resuming where the previous failed search of the same needle
        /// stopped (`resume`), so no byte is examined twice across reads.
        func search(_ needle: [UInt8], resume: inout Int) -> Int? {
            let from = max(0, resume)
            if let i = find(needle, in: buf, from: from) {
                work.bytesScanned += i + needle.count - from
                resume = 0
                return i
            }
            let next = max(from, buf.count - needle.count + 1)
            work.bytesScanned += next - from
            resume = next
            return nil
        }
        let first = Array("--".utf8) + boundary
        let delim = Array("\r\n--".utf8) + boundary
        let headEnd = Array("\r\n\r\n".utf8)
        // Preamble up to the first boundary: bounded, and the part already searched is dropped.
        var resume = 0
        var preamble = 0
        while true {
            if let start = search(first, resume: &resume) {
                guard preamble + start <= maxPreambleBytes else {
                    throw Failure.malformed("preamble before the first boundary is larger than \(maxPreambleBytes) bytes")
                }
                buf.removeFirst(start + first.count)
                break
            }
            // Everything before `resume` cannot start the boundary: drop it.
            preamble += resume
            buf.removeFirst(resume)
            resume = 0
            if preamble > maxPreambleBytes {
                throw Failure.malformed("preamble before the first boundary is larger than \(maxPreambleBytes) bytes")
            }
            if !fill() { throw Failure.malformed("no opening boundary") }
        }
        var parts = 0
        var sawFile = false
        while true {
            while buf.count < 2 { if !fill() { throw Failure.malformed("truncated after boundary") } }
            if buf[0] == UInt8(ascii: "-") && buf[1] == UInt8(ascii: "-") { return work }
            guard buf[0] == 13, buf[1] == 10 else { throw Failure.malformed("bad boundary line") }
            buf.removeFirst(2)
            parts += 1
            if parts > maxParts { throw Failure.malformed("more than \(maxParts) parts") }
            var headResume = 0
            var he: Int
            while true {
                if let i = search(headEnd, resume: &headResume) { he = i; break }
                if buf.count > maxHeaderBytes + headEnd.count {
                    throw Failure.malformed("part headers larger than \(maxHeaderBytes) bytes")
                }
                if !fill() { throw Failure.malformed("truncated part headers") }
            }
            guard he <= maxHeaderBytes else { throw Failure.malformed("part headers larger than \(maxHeaderBytes) bytes") }
            let header = try parseHeaders(String(decoding: buf[0..<he], as: UTF8.self))
            buf.removeFirst(he + 4)
            let isFile = header.filename != nil || header.name == "content"
            if isFile {
                if sawFile { throw Failure.malformed("more than one file part (only one content file is accepted)") }
                sawFile = true
            }
            var fieldBytes: [UInt8] = []
            var bodyResume = 0
            while true {
                if let d = search(delim, resume: &bodyResume) {
                    if isFile { try file(header, Array(buf[0..<d])); try file(header, nil) } else {
                        fieldBytes += buf[0..<d]
                        if fieldBytes.count > maxFieldBytes { throw Failure.malformed("field \(header.name) too large") }
                        try field(header.name, String(decoding: fieldBytes, as: UTF8.self))
                    }
                    buf.removeFirst(d + delim.count)
                    break
                }
                // Hand over everything that cannot be the start of a delimiter (all that was searched).
                let ready = bodyResume
                if ready > 0 {
                    if isFile { try file(header, Array(buf[0..<ready])) } else {
                        fieldBytes += buf[0..<ready]
                        if fieldBytes.count > maxFieldBytes { throw Failure.malformed("field \(header.name) too large") }
                    }
                    buf.removeFirst(ready)
                    bodyResume = 0
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
