import Foundation

/// One challenge from a `WWW-Authenticate` header, e.g.
/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`.
public struct AuthChallenge: Sendable, Equatable {
    /// Lowercased scheme: `bearer`, `basic`, …
    public var scheme: String
    /// Parameters with lowercased names and unquoted values.
    public var parameters: [String: String]

    public init(scheme: String, parameters: [String: String]) {
        self.scheme = scheme; self.parameters = parameters
    }

    public var realm: String? { parameters["realm"] }
    public var service: String? { parameters["service"] }
    public var scope: String? { parameters["scope"] }

    /// Parses a header value that may hold several challenges (RFC 7235 `#challenge`).
    /// Quoted strings may contain commas and `\"` escapes. Malformed tails are dropped.
    public static func parse(_ header: String) -> [AuthChallenge] {
        let s = Array(header.unicodeScalars)
        var i = 0
        var out: [AuthChallenge] = []
        func skipSpaces() { while i < s.count, s[i] == " " || s[i] == "\t" { i += 1 } }
        func isTokenChar(_ c: Unicode.Scalar) -> Bool {
            if c.properties.isAlphabetic || ("0"..."9").contains(c) { return c.isASCII }
            return "!#$%&'*+-.^_`|~/".unicodeScalars.contains(c)
        }
        func token() -> String {
            let start = i
            while i < s.count, isTokenChar(s[i]) { i += 1 }
            return String(String.UnicodeScalarView(s[start..<i]))
        }
        while i < s.count {
            skipSpaces()
            while i < s.count, s[i] == "," { i += 1; skipSpaces() }
            let scheme = token()
            if scheme.isEmpty { break }
            var params: [String: String] = [:]
            while true {
                skipSpaces()
                let save = i
                let name = token()
                skipSpaces()
                guard !name.isEmpty, i < s.count, s[i] == "=" else { i = save; break }
                i += 1
                skipSpaces()
                var value = ""
                if i < s.count, s[i] == "\"" {
                    i += 1
                    var v = String.UnicodeScalarView()
                    while i < s.count, s[i] != "\"" {
                        if s[i] == "\\", i + 1 < s.count { i += 1 }
                        v.append(s[i]); i += 1
                    }
                    if i < s.count { i += 1 }   // closing quote
                    value = String(v)
                } else {
                    let start = i
                    while i < s.count, s[i] != ",", s[i] != " ", s[i] != "\t" { i += 1 }
                    value = String(String.UnicodeScalarView(s[start..<i]))
                }
                params[name.lowercased()] = value
                skipSpaces()
                if i < s.count, s[i] == "," {
                    // Another parameter, or the next challenge: look ahead for `token =`.
                    var j = i + 1
                    while j < s.count, s[j] == " " || s[j] == "\t" || s[j] == "," { j += 1 }
                    var k = j
                    while k < s.count, isTokenChar(s[k]) { k += 1 }
                    var m = k
                    while m < s.count, s[m] == " " || s[m] == "\t" { m += 1 }
                    if k > j, m < s.count, s[m] == "=" { i = j; continue }
                    i = j
                    break
                }
                break
            }
            out.append(AuthChallenge(scheme: scheme.lowercased(), parameters: params))
        }
        return out
    }
}

/// A user name and password for one registry.
public struct RegistryCredentials: Sendable, Equatable {
    public var username: String
    public var password: String
    public init(username: String, password: String) { self.username = username; self.password = password }

    /// `Authorization: Basic …` value.
    public var basicAuthorization: String {
        "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
    }
}

/// Credentials from a docker-style `config.json` (`{"auths": {"host": {"auth": base64("user:pass")}}}`).
/// Credential helpers (`credsStore`, `credHelpers`) and identity tokens are not supported.
public struct DockerAuthConfig: Sendable, Equatable {
    public var entries: [String: RegistryCredentials]

    public init(entries: [String: RegistryCredentials] = [:]) { self.entries = entries }

    /// `REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let p = environment["REGISTRY_AUTH_FILE"], !p.isEmpty { return p }
        if let d = environment["DOCKER_CONFIG"], !d.isEmpty { return d + "/config.json" }
        if let h = environment["HOME"], !h.isEmpty { return h + "/.docker/config.json" }
        return nil
    }

    /// Reads the file; a missing file is an empty config, an unreadable or malformed one an error.
    public static func load(path: String) throws(OCIError) -> DockerAuthConfig {
        guard FileManager.default.fileExists(atPath: path) else { return DockerAuthConfig() }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .io("cannot read registry auth file \(path)")
        }
        return try parse(Array(data), source: path)
    }

    public static func parse(_ bytes: [UInt8], source: String = "auth file") throws(OCIError) -> DockerAuthConfig {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw .io("\(source) is not a JSON object")
        }
        var entries: [String: RegistryCredentials] = [:]
        for (key, value) in (obj["auths"] as? [String: Any]) ?? [:] {
            guard let e = value as? [String: Any] else { continue }
            var cred: RegistryCredentials?
            if let auth = e["auth"] as? String, !auth.isEmpty {
                guard let raw = Data(base64Encoded: auth, options: .ignoreUnknownCharacters),
                      let text = String(data: raw, encoding: .utf8), let colon = text.firstIndex(of: ":") else {
                    throw .io("\(source): the \"auth\" of \(key) is not base64 of user:password")
                }
                cred = RegistryCredentials(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
            } else if let u = e["username"] as? String, let p = e["password"] as? String {
                cred = RegistryCredentials(username: u, password: p)
            }
            if let cred { entries[normalizeHost(key)] = cred }
        }
        return DockerAuthConfig(entries: entries)
    }

    /// Credentials for a registry host (`docker.io` and its aliases are one registry).
    public func credentials(for registry: String) -> RegistryCredentials? {
        entries[Self.normalizeHost(registry)]
    }

    /// `https://index.docker.io/v1/` → `docker.io`; `http://h:5000/x` → `h:5000`.
    static func normalizeHost(_ key: String) -> String {
        var k = Substring(key.lowercased())
        if let r = k.range(of: "://") { k = k[r.upperBound...] }
        if let slash = k.firstIndex(of: "/") { k = k[..<slash] }
        switch k {
        case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com": return "docker.io"
        default: return String(k)
        }
    }
}
