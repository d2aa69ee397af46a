import FastCGI

/// Splits a raw path into percent-decoded segments. `%2F` inside a segment stays inside it, so
/// `/images/docker.io%2Flibrary%2Falpine:latest` has two segments.
func pathSegments(_ rawPath: String) -> [String]? {
    var path = rawPath
    return path.withUTF8 { bytes -> [String]? in
        var out: [String] = []
        var start = 0
        var escaped = false
        for i in 0...bytes.count {
            if i == bytes.count || bytes[i] == UInt8(ascii: "/") {
                if i > start {
                    // Split at an ASCII byte, so each segment of the (valid) text is valid too.
                    let segment = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
                    if escaped {
                        guard let decoded = percentDecode(segment) else { return nil }
                        out.append(decoded)
                    } else {
                        out.append(segment)
                    }
                }
                start = i + 1
                escaped = false
            } else if bytes[i] == UInt8(ascii: "%") {
                escaped = true
            }
        }
        return out
    }
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
    let handler: @Sendable (APIHandler, Request, any Exchange, [String: String]) throws -> Void

    init(method: String, pattern: String,
         handler: @escaping @Sendable (APIHandler, Request, any Exchange, [String: String]) throws -> Void) {
        self.method = method
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

    mutating func add(_ method: String, _ path: String,
                      _ h: @escaping @Sendable (APIHandler, Request, any Exchange, [String: String]) throws -> Void) {
        routes.append(Route(method: method, pattern: path, handler: h))
    }

    enum Outcome {
        case matched(Route, [String: String])
        case methodNotAllowed([String])
        case notFound
    }

    func find(method: String, segments: [String]) -> Outcome {
        var allowed: [String] = []
        for r in routes {
            guard let params = r.match(segments) else { continue }
            if r.method == method || (method == "HEAD" && r.method == "GET") { return .matched(r, params) }
            allowed.append(r.method)
        }
        return allowed.isEmpty ? .notFound : .methodNotAllowed(allowed)
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
