/// An OCI image reference, parsed and normalized like docker's `distribution/reference`:
/// `alpine` → `docker.io/library/alpine:latest`; `localhost:5000/x@sha256:…` stays a digest reference.
public struct ImageReference: Sendable, Equatable, CustomStringConvertible {
    /// Registry host (and port), e.g. `docker.io`, `127.0.0.1:5000`.
    public let registry: String
    /// Repository path inside the registry, e.g. `library/alpine`.
    public let path: String
    /// Tag, when given (or `latest` when neither tag nor digest was given).
    public let tag: String?
    /// Digest `sha256:<64 hex>`, when given.
    public let digest: String?

    /// `registry/path`.
    public var repository: String { registry + "/" + path }

    /// Normalized string: `repo:tag`, `repo@digest` or `repo:tag@digest`.
    public var normalized: String {
        var s = repository
        if let tag { s += ":" + tag }
        if let digest { s += "@" + digest }
        return s
    }

    public var description: String { normalized }

    /// The reference pinned to `digest` (drops the tag): `repo@sha256:…`.
    public func pinned(to digest: String) -> ImageReference {
        ImageReference(registry: registry, path: path, tag: nil, digest: digest)
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    public var manifestReference: String { digest ?? tag ?? "latest" }

    public init(registry: String, path: String, tag: String?, digest: String?) {
        self.registry = registry
        self.path = path
        self.tag = tag
        self.digest = digest
    }

    /// Parses and normalizes; throws `invalid_name` with the reason.
    public static func parse(_ input: String) throws(APIError) -> ImageReference {
        func bad(_ why: String) -> APIError { APIError(.invalidName, "invalid image name: \(why)") }
        guard !input.isEmpty else { throw bad("reference is empty") }
        guard input.utf8.count <= 512 else { throw bad("reference is too long") }
        var rest = Substring(input)
        var digest: String? = nil
        if let at = rest.firstIndex(of: "@") {
            let d = String(rest[rest.index(after: at)...])
            rest = rest[..<at]
            guard isValidDigest(d) else { throw bad("invalid digest \"\(d)\"") }
            digest = d
        }
        var tag: String? = nil
        // A tag is after the last ':' that follows the last '/'.
        let lastSlash = rest.lastIndex(of: "/")
        if let colon = rest.lastIndex(of: ":"), lastSlash == nil || colon > lastSlash! {
            let t = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
            guard isValidTag(t) else { throw bad("invalid tag \"\(t)\"") }
            tag = t
        }
        let name = String(rest)
        guard !name.isEmpty else { throw bad("repository name is empty") }
        var components = name.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var registry = "docker.io"
        if components.count > 1, let first = components.first,
           first.contains(".") || first.contains(":") || first == "localhost" {
            guard isValidDomain(first) else { throw bad("invalid registry host \"\(first)\"") }
            registry = first
            components.removeFirst()
        }
        if registry == "index.docker.io" { registry = "docker.io" }
        if registry == "docker.io" && components.count == 1 { components.insert("library", at: 0) }
        for c in components {
            guard isValidPathComponent(c) else {
                throw bad("invalid repository path component \"\(c)\" (lowercase letters, digits and separators only)")
            }
        }
        let path = components.joined(separator: "/")
        guard registry.utf8.count + 1 + path.utf8.count <= 255 else { throw bad("repository name is longer than 255 characters") }
        if tag == nil && digest == nil { tag = "latest" }
        return ImageReference(registry: registry, path: path, tag: tag, digest: digest)
    }

    static func isValidDigest(_ d: String) -> Bool {
        let parts = d.split(separator: ":", maxSplits: 1)
        guard parts.count == 2 else { return false }
        let alg = parts[0], hex = parts[1]
        guard alg == "sha256" || alg == "sha512" else { return false }
        let want = alg == "sha256" ? 64 : 128
        return hex.utf8.count == want && hex.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    static func isValidTag(_ t: String) -> Bool {
        let b = Array(t.utf8)
        guard !b.isEmpty, b.count <= 128 else { return false }
        func word(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 }
        guard word(b[0]) else { return false }
        return b.allSatisfy { word($0) || $0 == 46 || $0 == 45 }
    }

    static func isValidPathComponent(_ c: String) -> Bool {
        // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
        let b = Array(c.utf8)
        guard !b.isEmpty else { return false }
        func alnum(_ x: UInt8) -> Bool { (x >= 97 && x <= 122) || (x >= 48 && x <= 57) }
        guard alnum(b.first!), alnum(b.last!) else { return false }
        var i = 0
        while i < b.count {
            if alnum(b[i]) { i += 1; continue }
            // separator run
            var j = i
            while j < b.count, !alnum(b[j]) { j += 1 }
            let sep = b[i..<j]
            let s = String(decoding: sep, as: UTF8.self)
            let ok = s == "." || s == "_" || s == "__" || sep.allSatisfy { $0 == 45 }
            if !ok { return false }
            i = j
        }
        return true
    }

    static func isValidDomain(_ d: String) -> Bool {
        var host = Substring(d)
        if let colon = d.lastIndex(of: ":"), !d.hasPrefix("[") || d[..<colon].hasSuffix("]") {
            let port = d[d.index(after: colon)...]
            guard !port.isEmpty, port.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), port.count <= 5 else { return false }
            host = d[..<colon]
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { return host.count > 2 }
        guard !host.isEmpty else { return false }
        for label in host.split(separator: ".", omittingEmptySubsequences: false) {
            let b = Array(label.utf8)
            guard !b.isEmpty, b.count <= 63 else { return false }
            func an(_ x: UInt8) -> Bool { (x >= 97 && x <= 122) || (x >= 65 && x <= 90) || (x >= 48 && x <= 57) }
            guard an(b.first!), an(b.last!), b.allSatisfy({ an($0) || $0 == 45 }) else { return false }
        }
        return true
    }
}
