import Digest
import Foundation
import HTTPFetch
import Model
import Synchronization

/// Retries on 429, 5xx and connection errors: exponential backoff from `baseDelay`, capped, at most
/// `maxAttempts` tries in all; a `Retry-After` in seconds is honoured up to `maxRetryAfter`.
public struct RetryPolicy: Sendable {
    public var maxAttempts: Int
    public var baseDelay: Double
    public var maxDelay: Double
    public var maxRetryAfter: Double

    public init(maxAttempts: Int = 4, baseDelay: Double = 0.5, maxDelay: Double = 8, maxRetryAfter: Double = 30) {
        self.maxAttempts = max(1, maxAttempts); self.baseDelay = baseDelay
        self.maxDelay = maxDelay; self.maxRetryAfter = maxRetryAfter
    }

    func delay(afterAttempt n: Int, retryAfter: String?) -> Double {
        if let ra = retryAfter?.trimmingCharacters(in: .whitespaces), let secs = Double(ra), secs >= 0 {
            return min(secs, maxRetryAfter)
        }
        return min(maxDelay, baseDelay * pow(2, Double(n - 1)))
    }
}

public struct RegistryOptions: Sendable {
    /// `host[:port]` entries spoken to over plain HTTP (e.g. `127.0.0.1:5000`); all others use HTTPS.
    public var insecureRegistries: Set<String>
    public var auth: DockerAuthConfig
    public var retry: RetryPolicy
    public var connectTimeout: Double
    /// Time limit for one manifest or token request.
    public var requestTimeout: Double
    /// Blob transfers abort when slower than 1 KiB/s for this long.
    public var lowSpeedTime: Int
    /// Largest manifest accepted.
    public var maxManifestBytes: Int

    public init(insecureRegistries: Set<String> = [], auth: DockerAuthConfig = DockerAuthConfig(),
                retry: RetryPolicy = RetryPolicy(), connectTimeout: Double = 10, requestTimeout: Double = 60,
                lowSpeedTime: Int = 30, maxManifestBytes: Int = 4 << 20) {
        self.insecureRegistries = insecureRegistries; self.auth = auth; self.retry = retry
        self.connectTimeout = connectTimeout; self.requestTimeout = requestTimeout
        self.lowSpeedTime = lowSpeedTime; self.maxManifestBytes = maxManifestBytes
    }
}

/// A manifest's identity as the registry reports it.
public struct ManifestHead: Sendable, Equatable {
    public var digest: String
    public var mediaType: String
    public var size: Int64?
}

/// Distribution API v2 client: anonymous, bearer-token or basic auth, retries, verified content.
/// Thread-safe; every call takes the caller's `HTTPClient` (one per thread).
public final class RegistryClient: Sendable {
    public let options: RegistryOptions
    private let tokens = Mutex<[String: CachedToken]>([:])
    /// Hosts that asked for Basic auth (we then send credentials up front).
    private let basicHosts = Mutex<Set<String>>([])

    struct CachedToken: Sendable { var value: String; var expires: ContinuousClock.Instant }

    public init(options: RegistryOptions = RegistryOptions()) { self.options = options }

    /// `docker.io` is served by `registry-1.docker.io`.
    public static func apiHost(for registry: String) -> String {
        registry == "docker.io" ? "registry-1.docker.io" : registry
    }

    func baseURL(_ ref: ImageReference) -> String {
        let scheme = options.insecureRegistries.contains(ref.registry) ? "http" : "https"
        return "\(scheme)://\(Self.apiHost(for: ref.registry))/v2/\(ref.path)"
    }

    // MARK: Manifests

    /// `resolve` on a client of its own (one call, one handle).
    public func resolve(_ ref: ImageReference, timeout: Double) throws(OCIError) -> ManifestHead {
        let http: HTTPClient
        do { http = try HTTPClient() } catch { throw .io("cannot start an HTTP client: \(error)") }
        return try resolve(ref, http: http, timeout: timeout)
    }

    /// HEAD of the manifest the reference names (tag or digest), within `timeout` seconds overall.
    /// Falls back to a GET when the registry sends no `Docker-Content-Digest`.
    public func resolve(_ ref: ImageReference, http: HTTPClient, timeout: Double) throws(OCIError) -> ManifestHead {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        let url = baseURL(ref) + "/manifests/" + ref.manifestReference
        let resp = try execute(ref, http: http, deadline: deadline) { (auth, timeLeft) throws(OCIError) in
            let req = HTTPRequest(method: "HEAD", url: url, headers: auth + [HTTPHeader("Accept", MediaType.manifestAccept)],
                                  connectTimeout: min(options.connectTimeout, timeLeft), totalTimeout: timeLeft)
            return try Self.perform(http, req, sink: .memory(limit: 64 << 10))
        }
        let type = resp.header("Content-Type").map(MediaType.base) ?? ""
        if let d = resp.header("Docker-Content-Digest"), (try? BlobStore.hex(of: d)) != nil {
            if let want = ref.digest, want != d { throw .digestMismatch(expected: want, actual: d) }
            return ManifestHead(digest: d, mediaType: type, size: resp.header("Content-Length").flatMap { Int64($0) })
        }
        let m = try fetchManifest(ref, reference: ref.manifestReference, http: http, deadline: deadline)
        return ManifestHead(digest: m.digest, mediaType: m.mediaType, size: Int64(m.bytes.count))
    }

    /// GETs a manifest by tag or digest and verifies it: by digest, the bytes must hash to it; by
    /// tag, they must match the `Docker-Content-Digest` the registry sent (when it sent one).
    public func fetchManifest(_ ref: ImageReference, reference: String, http: HTTPClient,
                              deadline: ContinuousClock.Instant? = nil) throws(OCIError) -> FetchedManifest {
        let url = baseURL(ref) + "/manifests/" + reference
        let limit = options.maxManifestBytes
        let resp = try execute(ref, http: http, deadline: deadline) { (auth, timeLeft) throws(OCIError) in
            let req = HTTPRequest(method: "GET", url: url, headers: auth + [HTTPHeader("Accept", MediaType.manifestAccept)],
                                  connectTimeout: min(options.connectTimeout, timeLeft), totalTimeout: timeLeft)
            return try Self.perform(http, req, sink: .memory(limit: limit))
        }
        let actual = "sha256:" + Digests.sha256Hex(resp.body)
        if reference.hasPrefix("sha256:") || reference.hasPrefix("sha512:") {
            guard actual == reference else { throw .digestMismatch(expected: reference, actual: actual) }
        } else if let sent = resp.header("Docker-Content-Digest"), sent.hasPrefix("sha256:"), sent != actual {
            throw .digestMismatch(expected: sent, actual: actual)
        }
        var type = resp.header("Content-Type").map(MediaType.base) ?? ""
        if !MediaType.isIndex(type) && !MediaType.isManifest(type) {
            // Some registries answer application/json: trust the document's own mediaType.
            if let inferred = FetchedManifest.inferMediaType(resp.body), type.isEmpty || type == "application/json" || type == "text/plain" {
                type = inferred
            }
        }
        return FetchedManifest(bytes: resp.body, mediaType: type, digest: actual)
    }

    // MARK: Blobs

    /// Streams a blob into the store (verified while downloading), unless already present.
    /// `progress(bytesOfThisBlob)` is called as bytes arrive (it restarts from 0 on a retry).
    /// Returns true when it was downloaded, false when it was already cached.
    @discardableResult
    public func fetchBlob(_ ref: ImageReference, descriptor: Descriptor, into store: BlobStore, http: HTTPClient,
                          progress: ((Int64) -> Void)? = nil) throws(OCIError) -> Bool {
        let url = baseURL(ref) + "/blobs/" + descriptor.digest
        let lowSpeed = options.lowSpeedTime
        let connect = options.connectTimeout
        return try store.ensure(descriptor.digest) { () throws(OCIError) in
            _ = try execute(ref, http: http, deadline: nil) { (auth, _) throws(OCIError) in
                let tmp = try store.makeTemp(for: descriptor.digest)
                let req = HTTPRequest(method: "GET", url: url, headers: auth, connectTimeout: connect,
                                      lowSpeedLimit: 1024, lowSpeedTime: lowSpeed)
                let resp: HTTPResponse
                do throws(OCIError) {
                    resp = try Self.perform(http, req, sink: .file(descriptor: tmp.fd, hasher: tmp.hasher,
                                                                   limit: descriptor.size >= 0 ? descriptor.size : nil),
                                            progress: progress.map { cb in { now, _ in cb(now); return true } })
                } catch {
                    tmp.discard(); throw error
                }
                guard resp.isSuccess else { tmp.discard(); return resp }
                try store.commit(tmp, digest: descriptor.digest, size: descriptor.size >= 0 ? descriptor.size : nil)
                return resp
            }
        }
    }

    // MARK: Transport, retries and auth

    static func perform(_ http: HTTPClient, _ req: HTTPRequest, sink: HTTPSink,
                        progress: ((Int64, Int64) -> Bool)? = nil) throws(OCIError) -> HTTPResponse {
        do {
            return try http.perform(req, sink: sink, progress: progress)
        } catch {
            switch error {
            case .transport, .timedOut: throw .transport("\(req.method) \(req.url): \(error)")
            case .bodyTooLarge(let limit): throw .invalidResponse("\(req.method) \(req.url): body larger than \(limit) bytes")
            case .writeFailed(let e): throw .io("writing \(req.url) to disk: \(String(cString: strerror(e)))")
            case .aborted: throw .transport("\(req.url): transfer aborted")
            case .invalidRequest(let m): throw .invalidResponse("\(req.url): \(m)")
            }
        }
    }

    /// Runs `attempt` with auth headers until it returns a 2xx answer: handles a 401 challenge once
    /// (bearer token or basic), and retries 429/5xx/transport failures with backoff within `deadline`.
    /// `attempt` gets the headers to add and the seconds left (or the request timeout).
    /// Seconds left before `deadline` (at most `cap`; `cap` when there is no deadline).
    static func timeLeft(until deadline: ContinuousClock.Instant?, cap: Double) -> Double {
        guard let deadline else { return cap }
        let left = deadline - ContinuousClock.now
        return min(cap, Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18)
    }

    func execute(_ ref: ImageReference, http: HTTPClient, deadline: ContinuousClock.Instant?,
                 attempt: ([HTTPHeader], Double) throws(OCIError) -> HTTPResponse) throws(OCIError) -> HTTPResponse {
        let host = ref.registry
        let scope = "repository:\(ref.path):pull"
        var tries = 0
        var challenged = false
        while true {
            tries += 1
            let timeLeft = Self.timeLeft(until: deadline, cap: options.requestTimeout)
            guard timeLeft > 0.05 else { throw .transport("\(host): no answer within the time limit") }
            let auth = authorizationHeaders(host: host, scope: scope)
            let resp: HTTPResponse
            do {
                resp = try attempt(auth, timeLeft)
            } catch {
                if error.isRetryable, tries < options.retry.maxAttempts,
                   sleepBeforeRetry(tries, retryAfter: nil, deadline: deadline) { continue }
                throw error
            }
            if resp.isSuccess { return resp }
            switch resp.status {
            case 401 where !challenged:
                challenged = true
                let header = resp.header("WWW-Authenticate") ?? ""
                try authorize(challenges: AuthChallenge.parse(header), host: host, scope: scope, http: http,
                              deadline: deadline, body: resp.body, url: resp.effectiveURL)
                tries -= 1   // the challenge round does not count as a failure
                continue
            case 429, 500, 502, 503, 504:
                if tries < options.retry.maxAttempts,
                   sleepBeforeRetry(tries, retryAfter: resp.header("Retry-After"), deadline: deadline) { continue }
                throw Self.classify(resp, context: "\(host)/\(ref.path)")
            default:
                throw Self.classify(resp, context: "\(host)/\(ref.path)")
            }
        }
    }

    /// Sleeps before the next try; false when the deadline would pass first.
    private func sleepBeforeRetry(_ tries: Int, retryAfter: String?, deadline: ContinuousClock.Instant?) -> Bool {
        let d = options.retry.delay(afterAttempt: tries, retryAfter: retryAfter)
        if let deadline, ContinuousClock.now + .milliseconds(Int(d * 1000)) >= deadline { return false }
        if d > 0 { Thread.sleep(forTimeInterval: d) }
        return true
    }

    private func authorizationHeaders(host: String, scope: String) -> [HTTPHeader] {
        let key = host + "|" + scope
        if let t = tokens.withLock({ $0[key] }), t.expires > ContinuousClock.now {
            return [HTTPHeader("Authorization", "Bearer " + t.value)]
        }
        if basicHosts.withLock({ $0.contains(host) }), let cred = options.auth.credentials(for: host) {
            return [HTTPHeader("Authorization", cred.basicAuthorization)]
        }
        return []
    }

    private func authorize(challenges: [AuthChallenge], host: String, scope: String, http: HTTPClient,
                           deadline: ContinuousClock.Instant?, body: [UInt8], url: String) throws(OCIError) {
        if let bearer = challenges.first(where: { $0.scheme == "bearer" }), let realm = bearer.realm {
            let token = try fetchToken(realm: realm, service: bearer.service, scope: bearer.scope ?? scope,
                                       host: host, http: http, deadline: deadline)
            tokens.withLock { $0[host + "|" + scope] = token }
            return
        }
        if challenges.contains(where: { $0.scheme == "basic" }), options.auth.credentials(for: host) != nil {
            basicHosts.withLock { _ = $0.insert(host) }
            return
        }
        let why = Self.decodeErrors(body).first.map { "\($0.code): \($0.message)" } ?? "authentication required"
        let hint = challenges.contains(where: { $0.scheme == "basic" })
            ? " (no credentials for \(host) in the registry auth file)" : ""
        throw .unauthorized("\(url): \(why)\(hint)")
    }

    /// Docker-style token endpoint: GET realm?service=…&scope=…, with basic credentials when we have them.
    private func fetchToken(realm: String, service: String?, scope: String, host: String, http: HTTPClient,
                            deadline: ContinuousClock.Instant?) throws(OCIError) -> CachedToken {
        guard var comps = URLComponents(string: realm), let scheme = comps.scheme?.lowercased(),
              let realmHost = comps.host else {
            throw .invalidResponse("\(host) sent a token realm that is not a URL: \(realm)")
        }
        let realmHostPort = comps.port.map { "\(realmHost):\($0)" } ?? realmHost
        guard scheme == "https" || (scheme == "http" && (options.insecureRegistries.contains(realmHostPort)
                                                         || options.insecureRegistries.contains(host))) else {
            throw .unauthorized("\(host) sent token realm \(realm): plain HTTP is allowed only for insecure registries")
        }
        var items = comps.queryItems ?? []
        if let service { items.append(URLQueryItem(name: "service", value: service)) }
        items.append(URLQueryItem(name: "scope", value: scope))
        comps.queryItems = items
        // '+' would be read as a space by the token server.
        comps.percentEncodedQuery = comps.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        guard let url = comps.string else { throw .invalidResponse("cannot build token URL from \(realm)") }
        var headers: [HTTPHeader] = [HTTPHeader("Accept", "application/json")]
        if let cred = options.auth.credentials(for: host) {
            headers.append(HTTPHeader("Authorization", cred.basicAuthorization))
        }
        var tries = 0
        while true {
            tries += 1
            let timeLeft = Self.timeLeft(until: deadline, cap: options.requestTimeout)
            guard timeLeft > 0.05 else { throw .transport("token endpoint \(realmHostPort): no answer within the time limit") }
            let req = HTTPRequest(method: "GET", url: url, headers: headers,
                                  connectTimeout: min(options.connectTimeout, timeLeft), totalTimeout: timeLeft)
            let resp: HTTPResponse
            do {
                resp = try Self.perform(http, req, sink: .memory(limit: 1 << 20))
            } catch {
                if error.isRetryable, tries < options.retry.maxAttempts,
                   sleepBeforeRetry(tries, retryAfter: nil, deadline: deadline) { continue }
                throw error
            }
            if [429, 500, 502, 503, 504].contains(resp.status), tries < options.retry.maxAttempts,
               sleepBeforeRetry(tries, retryAfter: resp.header("Retry-After"), deadline: deadline) { continue }
            if resp.status == 401 || resp.status == 403 {
                throw .unauthorized("token endpoint \(realmHostPort) refused \(options.auth.credentials(for: host) == nil ? "anonymous access" : "the credentials") for \(scope)")
            }
            guard resp.isSuccess else { throw Self.classify(resp, context: "token endpoint \(realmHostPort)") }
            guard let obj = try? JSONSerialization.jsonObject(with: Data(resp.body)) as? [String: Any],
                  let token = (obj["token"] as? String) ?? (obj["access_token"] as? String), !token.isEmpty else {
                throw .invalidResponse("token endpoint \(realmHostPort) sent no token")
            }
            let lifetime = min(86_400, max(30, (obj["expires_in"] as? Int) ?? 60))   // bounded: the value is the registry's
            // Renew a little early.
            return CachedToken(value: token, expires: ContinuousClock.now + .seconds(lifetime - 10))
        }
    }

    /// One entry of a registry's JSON error body.
    public struct RegistryErrorEntry: Sendable, Equatable {
        public var code: String
        public var message: String
    }

    /// Decodes `{"errors":[{"code":…,"message":…}]}`; empty when the body is not that.
    public static func decodeErrors(_ body: [UInt8]) -> [RegistryErrorEntry] {
        guard !body.isEmpty, let obj = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let list = obj["errors"] as? [[String: Any]] else { return [] }
        return list.compactMap { e in
            guard let code = e["code"] as? String else { return nil }
            return RegistryErrorEntry(code: code.uppercased(), message: (e["message"] as? String) ?? "")
        }
    }

    /// Maps a non-2xx answer to an error by status and the registry's error codes (never by text).
    public static func classify(_ resp: HTTPResponse, context: String) -> OCIError {
        let errors = decodeErrors(resp.body)
        let codes = Set(errors.map(\.code))
        let detail = errors.first.map { "\($0.code): \($0.message)" } ?? "HTTP \(resp.status)"
        if resp.status == 404 || !codes.isDisjoint(with: ["NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"]) {
            return .notFound("\(context): \(detail)")
        }
        if resp.status == 401 || resp.status == 403 || !codes.isDisjoint(with: ["UNAUTHORIZED", "DENIED"]) {
            return .unauthorized("\(context): \(detail)")
        }
        if resp.status == 429 || resp.status >= 500 || codes.contains("TOOMANYREQUESTS") {
            return .transport("\(context): \(detail)")
        }
        return .invalidResponse("\(context): \(detail)")
    }
}
