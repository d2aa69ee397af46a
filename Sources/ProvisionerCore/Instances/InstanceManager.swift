import Foundation
import Model
import Store
import JSON

/// Composes instance lifecycles from single-hop driver operations. The hypervisor drivers (QEMU,
/// Cloud Hypervisor) plug in through `drivers`; with none, every job that needs a VM fails with
/// `dependency_missing` and create rolls back everything it reserved.
public final class InstanceManager: Sendable {
    let config: ProvisionerConfig
    /// Names of the hypervisor drivers this build can run; empty until a driver is registered.
    public let drivers: [String]
    let log = Log("prov.instances")

    public init(config: ProvisionerConfig, drivers: [String] = []) {
        self.config = config
        self.drivers = drivers
    }

    func instanceDir(_ id: String) -> String { "\(config.guestsDir)/\(id)" }

    func noDriver(_ what: String) -> APIError {
        APIError(.dependencyMissing,
                 "cannot \(what): this Provisioner has no hypervisor driver (neither QEMU nor Cloud Hypervisor support is available in this build)")
    }

    func run(_ job: JobRecord, store: Store) throws {
        guard let inst = try store.instance(id: job.target) else {
            if job.kind == .delete { return }
            throw APIError(.notFound, "instance \(job.target) not found")
        }
        switch job.kind {
        case .create:
            try create(inst, store: store)
        case .delete:
            try delete(inst, store: store)
        case .start, .stop, .standby, .restore:
            if let op = InstanceOperation(rawValue: job.kind.rawValue), let e = op.gate(inst.state) { throw e }
            throw noDriver(job.kind.rawValue)
        case .attach, .detach:
            guard inst.state == .running else {
                throw APIError(.invalidState, "cannot \(job.kind.rawValue) a volume in state \(inst.state.rawValue)")
            }
            throw noDriver("\(job.kind.rawValue) a volume live")
        default:
            throw APIError(.internalError, "unexpected job kind \(job.kind.rawValue)")
        }
    }

    /// Create with an undo list: the directory and the row are removed when any step fails.
    func create(_ inst: InstanceRecord, store: Store) throws {
        let dir = instanceDir(inst.id)
        var undo: [() -> Void] = [{ try? store.deleteInstance(id: inst.id) }]
        do {
            try FileManager.default.createDirectory(atPath: dir + "/logs", withIntermediateDirectories: true)
            undo.append { try? FileManager.default.removeItem(atPath: dir) }
            InstanceLog.append(dataDir: config.dataDir, instanceID: inst.id, "create requested image=\(inst.image) digest=\(inst.imageDigest)")
            guard !drivers.isEmpty else { throw noDriver("create instance") }
            throw noDriver("create instance")
        } catch {
            for u in undo.reversed() { u() }
            throw error
        }
    }

    /// Delete from any state: nothing is left (directory, row, attachments).
    func delete(_ inst: InstanceRecord, store: Store) throws {
        try? FileManager.default.removeItem(atPath: instanceDir(inst.id))
        try store.deleteInstance(id: inst.id)
        log.info("instance deleted", ["instance_id": inst.id])
    }

    /// Start-up reconcile: instance rows half-made by a crash during create are rolled back.
    public func reconcile(store: Store) throws {
        for inst in try store.listInstances() where inst.creating {
            if try store.hasPendingJob(target: inst.id, kinds: [.create]) { continue }
            try? FileManager.default.removeItem(atPath: instanceDir(inst.id))
            try store.deleteInstance(id: inst.id)
            log.warning("rolled back an interrupted create", ["instance_id": inst.id])
        }
    }
}
