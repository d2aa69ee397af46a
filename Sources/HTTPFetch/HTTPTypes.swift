import Digest

/// One header line, name as sent (compare case-insensitively).
public struct HTTPHeader: Sendable, Equatable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) { self.name = name; self.value = value }
}

/// What to send. Times are in seconds; `nil` means "no limit" for the total time.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [HTTPHeader]
    public var body: [UInt8]?
    /// Connect through this Unix socket instead of TCP (the URL's host is then only the Host header).
    public var unixSocket: String?
    public var followRedirects: Bool
    public var maxRedirects: Int
    public var connectTimeout: Double
    /// Whole-transfer limit (connect + headers + body).
    public var totalTimeout: Double?
    /// Abort when fewer than `lowSpeedLimit` bytes/s arrive for `lowSpeedTime` seconds (0 disables).
    public var lowSpeedLimit: Int
    public var lowSpeedTime: Int

    public init(method: String = "GET", url: String, headers: [HTTPHeader] = [], body: [UInt8]? = nil,
                unixSocket: String? = nil, followRedirects: Bool = true, maxRedirects: Int = 10,
                connectTimeout: Double = 10, totalTimeout: Double? = nil,
                lowSpeedLimit: Int = 1024, lowSpeedTime: Int = 30) {
        self.method = method; self.url = url; self.headers = headers; self.body = body
        self.unixSocket = unixSocket; self.followRedirects = followRedirects; self.maxRedirects = maxRedirects
        self.connectTimeout = connectTimeout; self.totalTimeout = totalTimeout
        self.lowSpeedLimit = lowSpeedLimit; self.lowSpeedTime = lowSpeedTime
    }
}

/// What came back from the last response (after redirects).
public struct HTTPResponse: Sendable {
    public var status: Int
    /// Headers of the final response only.
    public var headers: [HTTPHeader]
    /// The body for a memory sink; for a file sink, the body of a non-2xx answer (bounded), else empty.
    public var body: [UInt8]
    /// Body bytes delivered to the sink (file sinks: bytes written to the descriptor).
    public var bodyBytes: Int64
    public var effectiveURL: String

    public init(status: Int, headers: [HTTPHeader], body: [UInt8], bodyBytes: Int64, effectiveURL: String) {
        self.status = status; self.headers = headers; self.body = body
        self.bodyBytes = bodyBytes; self.effectiveURL = effectiveURL
    }

    /// Last value of a header, matched case-insensitively.
    public func header(_ name: String) -> String? {
        let want = name.lowercased()
        return headers.last(where: { $0.name.lowercased() == want })?.value
    }

    public var isSuccess: Bool { (200..<300).contains(status) }
}

/// Where the body goes.
public enum HTTPSink {
    /// Kept in memory; more than `limit` bytes fails with `.bodyTooLarge`.
    case memory(limit: Int)
    /// A 2xx body is written to `descriptor` (not closed) and fed to `hasher` as it arrives; a non-2xx
    /// body is kept in memory (bounded) so the caller can decode the error. `limit` bounds the bytes written.
    case file(descriptor: Int32, hasher: SHA256Hasher?, limit: Int64?)
}

/// Transfer failures. HTTP error statuses are not errors here: they come back in `HTTPResponse`.
public enum HTTPError: Error, Sendable, CustomStringConvertible, Equatable {
    /// Could not connect, resolve, talk TLS, or the connection broke (curl code and its message).
    case transport(code: Int, message: String)
    /// A connect, low-speed or total time limit was hit.
    case timedOut(String)
    /// The body exceeded the sink's limit.
    case bodyTooLarge(limit: Int64)
    /// Writing to the file sink failed (errno).
    case writeFailed(errno: Int32)
    /// The progress callback asked to stop.
    case aborted
    /// The request could not be set up (bad method, URL, or curl refused an option).
    case invalidRequest(String)

    /// Worth trying again: connection-level trouble and timeouts.
    public var isRetryable: Bool {
        switch self {
        case .transport, .timedOut: return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .transport(let code, let message): return "transport error (curl \(code)): \(message)"
        case .timedOut(let message): return "timed out: \(message)"
        case .bodyTooLarge(let limit): return "response body larger than \(limit) bytes"
        case .writeFailed(let e): return "writing the response body failed (errno \(e))"
        case .aborted: return "transfer aborted"
        case .invalidRequest(let message): return "invalid request: \(message)"
        }
    }
}
