import Synchronization

/// Counts live (upgraded) exec sessions against the server's `maxSessions`.
final class SessionSlots: Sendable {
    let max: Int
    private let used = Mutex(0)

    init(max: Int) { self.max = Swift.max(1, max) }

    /// Takes a slot; false when all are in use.
    func acquire() -> Bool {
        used.withLock { n in
            guard n < max else { return false }
            n += 1
            return true
        }
    }

    func release() { used.withLock { $0 -= 1 } }

    var inUse: Int { used.withLock { $0 } }
}
