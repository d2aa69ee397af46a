import Foundation
import VMM

/// Where each disk sits: on q35 every disk has its own `pcie-root-port` (so any disk, boot-time or
/// hot-plugged, can be unplugged), plus spare ports for later hot-plugs. A migration stream only
/// loads into a QEMU whose devices sit at the same PCI addresses, so the layout is kept with the
/// VM (`<runDir>/qemu-layout.json`) and copied into each snapshot (`<dir>/qemu-layout.json`);
/// restore rebuilds the argv from it, hot-plugged disks included as cold-plugged ones.
public struct QEMULayout: Sendable, Equatable, Codable {
    public static let fileName = "qemu-layout.json"

    public var machine: QEMUMachine
    /// Number of root ports (q35); 0 on microvm.
    public var ports: Int
    /// Disk id → root-port index.
    public var slots: [String: Int]

    public init(machine: QEMUMachine, ports: Int, slots: [String: Int]) {
        self.machine = machine; self.ports = ports; self.slots = slots
    }

    /// The layout of a fresh launch: disks on ports 0…n-1 in spec order (so they enumerate as vda,
    /// vdb, … in that order), then `spareHotplugPorts` free ports.
    public static func initial(for spec: VMSpec, options: QEMUOptions) -> QEMULayout {
        guard options.machine == .q35 else { return QEMULayout(machine: options.machine, ports: 0, slots: [:]) }
        var slots: [String: Int] = [:]
        for (i, d) in spec.disks.enumerated() { slots[d.id] = i }
        let ports = min(QEMUArgs.maxRootPorts, spec.disks.count + max(0, options.spareHotplugPorts))
        return QEMULayout(machine: .q35, ports: ports, slots: slots)
    }

    /// Makes sure every disk of `spec` has a port (a disk unknown to a saved layout takes the
    /// lowest free one, growing the port count if needed). Used when restoring or re-attaching.
    public mutating func accommodate(_ spec: VMSpec) {
        guard machine == .q35 else { return }
        for d in spec.disks where slots[d.id] == nil {
            if let p = freePort() { slots[d.id] = p } else if ports < QEMUArgs.maxRootPorts { slots[d.id] = ports; ports += 1 }
        }
    }

    /// Lowest root port without a disk.
    public func freePort() -> Int? {
        let used = Set(slots.values)
        return (0..<ports).first { !used.contains($0) }
    }

    public func write(to path: String) throws(VMMError) {
        do {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            let data = try enc.encode(self)
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw .process("cannot write \(path): \(error)")
        }
    }

    /// Reads a saved layout; nil when the file is missing or unreadable.
    public static func read(from path: String) -> QEMULayout? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(QEMULayout.self, from: data)
    }
}
