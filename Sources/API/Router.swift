import FastCGI
#if canImport(Glibc)
import Glibc
#endif

/// Splits a raw path into percent-decoded segments. `%2F` inside a segment stays inside it, so
/// `/images/docker.io%2Flibrary%2Falpine:latest` has two segments. nil on a malformed escape,
/// invalid UTF-8, or a path that `checkedSegments` refuses.
func pathSegments(_ rawPath: String) -> [String]? {
    if case .ok(let segs) = checkedSegments(rawPath, documentURI: "") { return segs }
    return nil
}

/// The outcome of reading a request path: its decoded segments, or why it is refused (400).
enum PathCheck: Equatable {
    case ok([String])
    case refused(String)
}

/// Reads the raw request path the way the app routes on it, refusing any path that nginx may
/// have read differently (nginx picks its location — and so whether a bearer token is needed —
/// on the decoded path with dot segments resolved and slashes merged):
/// - a malformed `%` escape or invalid UTF-8 in a segment;
/// - a NUL in a decoded segment;
/// - a segment that is `.` or `..`, or whose decoded text, split on `/`, has a `.` or `..`
///   component (`..%2Fhealth`, `%2e%2E`, `a%2F.%2Fb`);
/// - when nginx passed its `$uri` (`documentURI`, non-empty): a path whose full decoding with
///   repeated slashes merged is not byte for byte that `$uri`.
/// `%2F` inside a segment stays legal (`/images/docker.io%2Flibrary%2Falpine:latest`).
func checkedSegments(_ rawPath: String, documentURI: String) -> PathCheck {
    var path = rawPath
    let result: PathCheck = path.withUTF8 { bytes -> PathCheck in
        var out: [String] = []
        var start = 0
        var escaped = false
        var anyEscape = false
        var repeatedSlash = false
        for i in 0...bytes.count {
            if i == bytes.count || bytes[i] == UInt8(ascii: "/") {
                if i > start {
                    // Split at an ASCII byte, so each segment of the (valid) text is valid too.
                    let raw = UnsafeBufferPointer(rebasing: bytes[start..<i])
                    if escaped {
                        let segment = String(decoding: raw, as: UTF8.self)
                        guard let decoded = percentDecode(segment) else {
                            return .refused("malformed percent-encoding in path")
                        }
                        if let problem = segmentProblem(decoded) { return .refused(problem) }
                        out.append(decoded)
                    } else {
                        if isDotSegment(raw) { return .refused("dot segments ('.', '..') are not allowed in a path") }
                        out.append(String(decoding: raw, as: UTF8.self))
                    }
                } else if i < bytes.count && i > 0 {
                    repeatedSlash = true
                }
                start = i + 1
                escaped = false
            } else if bytes[i] == UInt8(ascii: "%") {
                escaped = true
                anyEscape = true
            }
        }
        guard !documentURI.isEmpty else { return .ok(out) }
        // The common case costs one comparison: nothing to decode or merge.
        if !anyEscape && !repeatedSlash {
            return sameBytes(documentURI, bytes) ? .ok(out) : .refused(mismatch)
        }
        return canonicalMatches(bytes, documentURI) ? .ok(out) : .refused(mismatch)
    }
    return result
}

private let mismatch = "the path is not in canonical form (encoded slashes or dots that change its meaning, or a decoding mismatch)"

/// Why a decoded segment is refused, or nil.
private func segmentProblem(_ decoded: String) -> String? {
    var utf8 = decoded.utf8[...]
    if utf8.contains(0) { return "NUL is not allowed in a path" }
    while !utf8.isEmpty {
        let end = utf8.firstIndex(of: UInt8(ascii: "/")) ?? utf8.endIndex
        let component = utf8[utf8.startIndex..<end]
        if component.elementsEqual(".".utf8) || component.elementsEqual("..".utf8) {
            return "dot segments ('.', '..', also percent-encoded or behind %2F) are not allowed in a path"
        }
        utf8 = end == utf8.endIndex ? utf8[end...] : utf8[utf8.index(after: end)...]
    }
    return nil
}

private func isDotSegment(_ raw: UnsafeBufferPointer<UInt8>) -> Bool {
    (raw.count == 1 && raw[0] == UInt8(ascii: ".")) || (raw.count == 2 && raw[0] == UInt8(ascii: ".") && raw[1] == UInt8(ascii: "."))
}

/// Whether `text`'s UTF-8 is exactly `bytes` (one memcmp).
private func sameBytes(_ text: String, _ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    var text = text
    return text.withUTF8 { t in
        t.count == bytes.count && (t.count == 0 || memcmp(t.baseAddress!, bytes.baseAddress!, t.count) == 0)
    }
}

/// Whether `raw`, fully percent-decoded (`%2F` too) with runs of `/` merged, is `uri`.
private func canonicalMatches(_ raw: UnsafeBufferPointer<UInt8>, _ uri: String) -> Bool {
    var canonical: [UInt8] = []
    canonical.reserveCapacity(raw.count)
    var i = 0
    while i < raw.count {
        var c = raw[i]
        if c == UInt8(ascii: "%") {
            guard i + 2 < raw.count, let h = hexValue(raw[i + 1]), let l = hexValue(raw[i + 2]) else { return false }
            c = h << 4 | l
            i += 3
        } else {
            i += 1
        }
        if c == UInt8(ascii: "/") && canonical.last == UInt8(ascii: "/") { continue }
        canonical.append(c)
    }
    return canonical.withUnsafeBufferPointer { sameBytes(uri, $0) }
}

/// Percent-decodes; nil on a malformed escape or invalid UTF-8.
func percentDecode(_ s: String, plusAsSpace: Bool = false) -> String? {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(s.utf8.count)
    var it = s.utf8[...]
    while let c = it.popFirst() {
        if c == UInt8(ascii: "%") {
            guard it.count >= 2, let h = hexValue(it[it.startIndex]), let l = hexValue(it[it.index(after: it.startIndex)]) else { return nil }
            bytes.append(h << 4 | l)
            it = it.dropFirst(2)
        } else if plusAsSpace && c == UInt8(ascii: "+") {
            bytes.append(32)
        } else {
            bytes.append(c)
        }
    }
    return String(validating: bytes, as: UTF8.self)
}

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case 48...57: return c - 48
    case 65...70: return c - 55
    case 97...102: return c - 87
    default: return nil
    }
}

/// Parses a query string into decoded key/value pairs (last one wins).
func parseQuery(_ q: String) -> [String: String] {
    var out: [String: String] = [:]
    for pair in q.split(separator: "&") {
        let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        guard let k = percentDecode(String(kv[0]), plusAsSpace: true) else { continue }
        out[k] = kv.count > 1 ? (percentDecode(String(kv[1]), plusAsSpace: true) ?? "") : ""
    }
    return out
}

/// One route: the method and a pattern of literal segments and `{param}` captures. A trailing
/// `{name*}` captures the rest of the path joined by `/` (image references).
struct Route: Sendable {
    enum Part: Sendable {
        case literal(String)
        case param(String)
        case rest(String)
    }

    let method: String
    let parts: [Part]
    /// Served without an authenticated subject (nginx's open locations: only `/health`).
    let open: Bool
    let handler: @Sendable (APIHandler, Request, any Exchange, [String: String]) throws -> Void

    init(method: String, pattern: String, open: Bool = false,
         handler: @escaping @Sendable (APIHandler, Request, any Exchange, [String: String]) throws -> Void) {
        self.method = method
        self.open = open
        self.handler = handler
        parts = pattern.split(separator: "/").map { p in
            if p.hasPrefix("{") && p.hasSuffix("*}") { return .rest(String(p.dropFirst().dropLast(2))) }
            if p.hasPrefix("{") { return .param(String(p.dropFirst().dropLast())) }
            return .literal(String(p))
        }
    }

    /// The captures when `segs` matches; the literals are checked before any capture is stored.
    func match(_ segs: [String]) -> [String: String]? {
        var rest = false
        for (i, p) in parts.enumerated() {
            switch p {
            case .literal(let l): if i >= segs.count || l != segs[i] { return nil }
            case .param: if i >= segs.count { return nil }
            case .rest: if i >= segs.count { return nil }; rest = true
            }
            if rest { break }
        }
        if !rest && segs.count != parts.count { return nil }
        var params: [String: String] = [:]
        for (i, p) in parts.enumerated() {
            switch p {
            case .literal: continue
            case .param(let name): params[name] = segs[i]
            case .rest(let name): params[name] = segs[i...].joined(separator: "/"); return params
            }
        }
        return params
    }
}

/// Routes grouped per resource; each resource file registers its own.
struct Router: Sendable {
    var routes: [Route] = []

    /// Adds a route; `open` routes are served without an authenticated subject.
    mutating func add(_ method: String, _ path: String, open: Bool = false,
                      _ h: @escaping @Sendable (APIHandler, Request, any Exchange, [String: String]) throws -> Void) {
        routes.append(Route(method: method, pattern: path, open: open, handler: h))
    }

    enum Outcome {
        case matched(Route, [String: String])
        /// The path exists with other methods; `open`: it is an open path (`/health`).
        case methodNotAllowed([String], open: Bool)
        case notFound
    }

    func find(method: String, segments: [String]) -> Outcome {
        var allowed: [String] = []
        var open = true
        for r in routes {
            guard let params = r.match(segments) else { continue }
            if r.method == method || (method == "HEAD" && r.method == "GET") { return .matched(r, params) }
            allowed.append(r.method)
            open = open && r.open
        }
        return allowed.isEmpty ? .notFound : .methodNotAllowed(allowed, open: open)
    }

    static let shared: Router = {
        var r = Router()
        HealthRoutes.register(&r)
        ImageRoutes.register(&r)
        InstanceRoutes.register(&r)
        VolumeRoutes.register(&r)
        IngressRoutes.register(&r)
        return r
    }()
}
