import FastCGI

/// Splits a raw path into percent-decoded segments. `%2F` inside a segment stays inside it, so
/// `/images/docker.io%2Flibrary%2Falpine:latest` has two segments.
func pathSegments(_ rawPath: String) -> [String]? {
    var out: [String] = []
    for seg in rawPath.split(separator: "/", omittingEmptySubsequences: true) {
        guard let d = percentDecode(String(seg)) else { return nil }
        out.append(d)
    }
    return out
}

/// Percent-decodes; nil on a malformed escape or invalid UTF-8.
func percentDecode(_ s: String, plusAsSpace: Bool = false) -> String? {
    var bytes: [UInt8] = []
    var it = Array(s.utf8)[...]
    while let c = it.popFirst() {
        if c == UInt8(ascii: "%") {
            guard it.count >= 2, let h = hexValue(it[it.startIndex]), let l = hexValue(it[it.startIndex + 1]) else { return nil }
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
    let method: String
    let pattern: [String]
    let handler: @Sendable (APIHandler, Request, any Exchange, [String: String]) throws -> Void

    func match(_ segs: [String]) -> [String: String]? {
        var params: [String: String] = [:]
        for (i, p) in pattern.enumerated() {
            if p.hasPrefix("{") && p.hasSuffix("*}") {
                guard i < segs.count else { return nil }
                params[String(p.dropFirst().dropLast(2))] = segs[i...].joined(separator: "/")
                return params
            }
            guard i < segs.count else { return nil }
            if p.hasPrefix("{") { params[String(p.dropFirst().dropLast())] = segs[i] } else if p != segs[i] { return nil }
        }
        return segs.count == pattern.count ? params : nil
    }
}

/// Routes grouped per resource; each resource file registers its own.
struct Router: Sendable {
    var routes: [Route] = []

    mutating func add(_ method: String, _ path: String,
                      _ h: @escaping @Sendable (APIHandler, Request, any Exchange, [String: String]) throws -> Void) {
        routes.append(Route(method: method, pattern: path.split(separator: "/").map(String.init), handler: h))
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
