import Foundation

/// How work interrupted by a Provisioner crash is retried: at most `maxAttempts` starts in all,
/// each re-queue waiting `baseDelay × 2^(attempts-1)` seconds (at most 64 × `baseDelay`), so a
/// job that crashes the Provisioner every time ends `failed` instead of crash-looping it.
public struct JobRetryPolicy: Sendable, Equatable {
    public var maxAttempts: Int
    public var baseDelay: Double

    public init(maxAttempts: Int = 3, baseDelay: Double = 5) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelay = max(0, baseDelay)
    }

    /// Milliseconds to wait before the next start, after `attempts` starts.
    public func backoffMillis(afterAttempts attempts: Int) -> Int64 {
        let exponent = Double(min(max(attempts - 1, 0), 6))
        return Int64((baseDelay * pow(2, exponent) * 1000).rounded())
    }

    /// True when another start is still allowed after `attempts` starts.
    public func allowsRetry(afterAttempts attempts: Int) -> Bool { attempts < maxAttempts }
}
