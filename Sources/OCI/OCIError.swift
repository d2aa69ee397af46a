/// Everything that can go wrong pulling or unpacking an image, by what the caller does about it.
public enum OCIError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The registry says the repository, tag, manifest or blob does not exist (404, NAME_UNKNOWN, …).
    case notFound(String)
    /// The registry refused us (401/403, UNAUTHORIZED, DENIED) even after the auth flow.
    case unauthorized(String)
    /// The registry could not be reached or kept failing (connection errors, timeouts, 429/5xx after retries).
    case transport(String)
    /// A blob or manifest did not hash to the digest that named it.
    case digestMismatch(expected: String, actual: String)
    /// A manifest, config or layer type we do not handle (schema 1, foreign layers, …).
    case unsupportedMediaType(String)
    /// The index has no manifest for the wanted platform.
    case noMatchingPlatform(String)
    /// The registry answered something else we cannot use (other status, malformed JSON, oversize body).
    case invalidResponse(String)
    /// A layer entry tried to leave the root (absolute path, `..`, hardlink outside) or is malformed.
    case unsafeLayer(String)
    /// A layer exceeded the configured size or entry-count limits.
    case limitExceeded(String)
    /// Local file-system trouble (cache, rootfs).
    case io(String)

    /// Worth another try after a pause.
    var isRetryable: Bool { if case .transport = self { return true }; return false }

    public var description: String {
        switch self {
        case .notFound(let m): return "not found: \(m)"
        case .unauthorized(let m): return "unauthorized: \(m)"
        case .transport(let m): return "registry unreachable: \(m)"
        case .digestMismatch(let e, let a): return "digest mismatch: expected \(e), got \(a)"
        case .unsupportedMediaType(let m): return "unsupported media type: \(m)"
        case .noMatchingPlatform(let m): return "no matching platform: \(m)"
        case .invalidResponse(let m): return "invalid registry response: \(m)"
        case .unsafeLayer(let m): return "unsafe layer: \(m)"
        case .limitExceeded(let m): return "limit exceeded: \(m)"
        case .io(let m): return "i/o error: \(m)"
        }
    }
}
