import Foundation
import AgentProtocol
import VMM

/// The guest-agent links of all live VMs, by instance id. The instance manager connects a link
/// when a VMM starts (launch, restore, adoption at start-up) and closes it when the VMM goes.
/// `onReady` runs (on the link's thread) each time an agent answers `hello`.
public final class AgentHub: @unchecked Sendable {
    private let lock = NSLock()
    private var links: [String: AgentLink] = [:]
    private let onReady: @Sendable (String) -> Void

    public init(onReady: @escaping @Sendable (String) -> Void) {
        self.onReady = onReady
    }

    /// Starts (or restarts) the link of `instanceID`.
    func connect(_ instanceID: String, channel: AgentChannel) {
        let link = AgentLink(instanceID: instanceID, channel: channel) { [onReady] _ in onReady(instanceID) }
        lock.lock()
        let old = links.updateValue(link, forKey: instanceID)
        lock.unlock()
        old?.close()
        link.start()
    }

    func disconnect(_ instanceID: String) {
        lock.lock(); let old = links.removeValue(forKey: instanceID); lock.unlock()
        old?.close()
    }

    func link(_ instanceID: String) -> AgentLink? {
        lock.lock(); defer { lock.unlock() }
        return links[instanceID]
    }

    /// True once the instance's agent has answered (and its link is still up).
    public func isReady(_ instanceID: String) -> Bool { link(instanceID)?.isReady ?? false }

    public func isConnecting(_ instanceID: String) -> Bool { link(instanceID) != nil }

    /// Waits up to `timeout` seconds for the agent; false when it did not answer or has no link.
    public func waitReady(_ instanceID: String, timeout: Double) -> Bool {
        guard let l = link(instanceID) else { return false }
        return l.waitReady(timeout: timeout)
    }

    /// Closes every link (shutdown).
    public func closeAll() {
        lock.lock(); let all = links; links.removeAll(); lock.unlock()
        for l in all.values { l.close() }
    }
}
