import Foundation
import Model
import VMM

/// The hypervisor drivers this host can use, and which one new instances get by default
/// (HYPERVISOR=auto picks Cloud Hypervisor when its binary is found, else QEMU).
public struct DriverTable: Sendable {
    public let drivers: [any HypervisorDriver]
    public let defaultKind: String?

    public init(drivers: [any HypervisorDriver], preferred: String = "auto") {
        let available = drivers.filter { $0.isAvailable() }
        self.drivers = available
        if preferred != "auto", available.contains(where: { $0.kind == preferred }) {
            defaultKind = preferred
        } else {
            defaultKind = available.first(where: { $0.kind == "cloud-hypervisor" })?.kind ?? available.first?.kind
        }
    }

    public var kinds: [String] { drivers.map(\.kind) }

    /// The driver for `kind` (nil = the default), or `dependency_missing` saying what to install.
    public func driver(_ kind: String?) throws(APIError) -> any HypervisorDriver {
        let want = kind ?? defaultKind
        guard let want else {
            throw APIError(.dependencyMissing, "no hypervisor is available on this host: install qemu-system-x86 (apt-get install qemu-system-x86) or cloud-hypervisor")
        }
        guard let d = drivers.first(where: { $0.kind == want }) else {
            throw APIError(.dependencyMissing, "hypervisor \(want) is not available on this host (available: \(kinds.isEmpty ? "none" : kinds.joined(separator: ", ")))")
        }
        return d
    }
}
