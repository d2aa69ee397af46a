import SQLite
import JSON
import Model

/// A volume attached to an instance, in device order.
public struct InstanceVolume: Sendable, Equatable {
    public var volumeID: String
    public var mountPath: String
    public var readonly: Bool
    public var overlay: Bool
    public var overlaySize: Int64?
    public init(volumeID: String, mountPath: String, readonly: Bool, overlay: Bool, overlaySize: Int64?) {
        self.volumeID = volumeID; self.mountPath = mountPath; self.readonly = readonly
        self.overlay = overlay; self.overlaySize = overlaySize
    }
}

/// One instance as stored. `state` is kept true by the Provisioner.
public struct InstanceRecord: Sendable {
    public var id: String
    public var name: String
    public var image: String
    public var imageDigest: String
    public var state: InstanceState
    public var stateError: String?
    public var size: Int64
    public var hotplugSize: Int64
    public var overlaySize: Int64
    public var vcpus: Int
    public var env: [String: String]
    public var networkEnabled: Bool
    public var ip: String?
    public var mac: String?
    public var hypervisor: String?
    public var vmmPID: Int?
    public var hasSnapshot: Bool
    public var creating: Bool
    /// Created with `skip_guest_agent`: no agent in the guest, so no exec, live volumes or readiness.
    public var skipGuestAgent: Bool = false
    public var createdAt: String
    public var startedAt: String?
    public var stoppedAt: String?
    public var volumes: [InstanceVolume]

    public init(id: String, name: String, image: String, imageDigest: String, state: InstanceState, size: Int64,
                hotplugSize: Int64, overlaySize: Int64, vcpus: Int, env: [String: String], networkEnabled: Bool,
                hypervisor: String?, createdAt: String, volumes: [InstanceVolume]) {
        self.id = id; self.name = name; self.image = image; self.imageDigest = imageDigest; self.state = state
        self.stateError = nil; self.size = size; self.hotplugSize = hotplugSize; self.overlaySize = overlaySize
        self.vcpus = vcpus; self.env = env; self.networkEnabled = networkEnabled; self.ip = nil; self.mac = nil
        self.hypervisor = hypervisor; self.vmmPID = nil; self.hasSnapshot = false; self.creating = true
        self.createdAt = createdAt; self.startedAt = nil; self.stoppedAt = nil; self.volumes = volumes
    }
}

/// Host-wide limits checked when an instance is admitted.
public struct InstanceLimits: Sendable {
    public var maxTotalVCPUs: Int          // 0 = unlimited
    public var maxTotalMemory: Int64       // 0 = unlimited
    public var maxVolumeDevices: Int
    public init(maxTotalVCPUs: Int = 0, maxTotalMemory: Int64 = 0, maxVolumeDevices: Int = 23) {
        self.maxTotalVCPUs = maxTotalVCPUs; self.maxTotalMemory = maxTotalMemory; self.maxVolumeDevices = maxVolumeDevices
    }
}

extension Store {
    /// States in which an instance holds a network allocation (and so its name).
    static let allocatedStates = "('Created','Initializing','Running','Paused','Shutdown','Standby','Unknown')"
    /// States that count against aggregate CPU/memory limits.
    static let activeStates = "('Created','Initializing','Running','Paused','Shutdown','Unknown')"

    /// Admits a new instance atomically: name uniqueness among networked instances, volumes exist
    /// and obey the multi-attach rules, aggregate limits. Throws an `APIError` and writes nothing
    /// when any check fails.
    public func insertInstance(_ rec: InstanceRecord, limits: InstanceLimits) throws {
        try transaction {
            if rec.networkEnabled {
                let clash = try db.queryOne("""
                    SELECT 1 FROM instances WHERE name = ? AND network_enabled = 1 AND state IN \(Self.allocatedStates) LIMIT 1
                    """, [rec.name])
                if clash != nil {
                    throw APIError(.nameConflict, "instance name '\(rec.name)' already exists, can't assign into same network: default")
                }
            }
            if limits.maxTotalVCPUs > 0 || limits.maxTotalMemory > 0 {
                // Summed here with checked arithmetic (SQL SUM raises on overflow, and a plain `+`
                // traps): a total that no longer fits in Int64 is over any limit.
                let rows = try db.query("SELECT vcpus, size, hotplug_size FROM instances WHERE state IN \(Self.activeStates)")
                var cpus: Int64? = Int64(rec.vcpus)
                var mem: Int64? = Size.sum(rec.size, rec.hotplugSize)
                for r in rows {
                    if let c = cpus { cpus = Size.sum(c, r.int("vcpus") ?? 0) }
                    if let m = mem { mem = Size.sum([m, r.int("size") ?? 0, r.int("hotplug_size") ?? 0]) }
                }
                if limits.maxTotalVCPUs > 0, cpus.map({ $0 > Int64(limits.maxTotalVCPUs) }) ?? true {
                    throw APIError(.limitExceeded, "total vcpus would be \(cpus.map(String.init) ?? "beyond any count"), exceeds aggregate limit of \(limits.maxTotalVCPUs)")
                }
                if limits.maxTotalMemory > 0, mem.map({ $0 > limits.maxTotalMemory }) ?? true {
                    throw APIError(.limitExceeded, "total memory would be \(mem.map(Size.format) ?? "beyond any size"), exceeds aggregate limit of \(Size.format(limits.maxTotalMemory))")
                }
            }
            try checkAttachments(instanceID: rec.id, rec.volumes, existingDevices: 0, limits: limits)
            try db.run("""
                INSERT INTO instances(id, name, image, image_digest, state, size, hotplug_size, overlay_size, vcpus, env,
                    network_enabled, hypervisor, creating, created_at, skip_guest_agent)
                VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
                """, [rec.id, rec.name, rec.image, rec.imageDigest, rec.state.rawValue, rec.size, rec.hotplugSize,
                      rec.overlaySize, rec.vcpus, Columns.encode(rec.env), rec.networkEnabled, rec.hypervisor, rec.createdAt,
                      rec.skipGuestAgent])
            for (i, v) in rec.volumes.enumerated() {
                try insertAttachment(instanceID: rec.id, v, position: i)
            }
        }
    }

    func insertAttachment(instanceID: String, _ v: InstanceVolume, position: Int) throws {
        try db.run("""
            INSERT INTO instance_volumes(instance_id, volume_id, position, mount_path, readonly, overlay, overlay_size)
            VALUES(?, ?, ?, ?, ?, ?, ?)
            """, [instanceID, v.volumeID, position, v.mountPath, v.readonly || v.overlay, v.overlay, v.overlaySize])
    }

    /// Multi-attach rules (contract §1.5): free volume → any mode; a read-write attachment
    /// excludes all others; read-only attachments admit only read-only ones; never twice on one instance.
    func checkAttachments(instanceID: String, _ vols: [InstanceVolume], existingDevices: Int, limits: InstanceLimits) throws {
        let devices = existingDevices + vols.reduce(0) { $0 + ($1.overlay ? 2 : 1) }
        if devices > limits.maxVolumeDevices {
            throw APIError(.badRequest, "too many volume devices: \(devices) (at most \(limits.maxVolumeDevices); an overlay volume takes 2)")
        }
        for v in vols {
            guard let vol = try db.queryOne("SELECT status FROM volumes WHERE id = ?", [v.volumeID]) else {
                throw APIError(.notFound, "volume \(v.volumeID) not found")
            }
            if vol.string("status") != "ready" {
                throw APIError(.conflict, "volume \(v.volumeID) is not ready (status \(vol.string("status") ?? "?"))")
            }
            let atts = try db.query("SELECT instance_id, readonly FROM instance_volumes WHERE volume_id = ?", [v.volumeID])
            if atts.contains(where: { $0.string("instance_id") == instanceID }) {
                throw APIError(.conflict, "volume \(v.volumeID) is already attached to this instance")
            }
            let wantRO = v.readonly || v.overlay
            if atts.contains(where: { !$0.bool("readonly") }) {
                throw APIError(.conflict, "volume \(v.volumeID) is attached read-write to another instance")
            }
            if !atts.isEmpty && !wantRO {
                throw APIError(.conflict, "volume \(v.volumeID) is attached read-only elsewhere; it can only be attached read-only")
            }
        }
    }

    /// Records a live attachment after the checks (the Provisioner calls this once the disk is in).
    public func attachVolume(instanceID: String, _ v: InstanceVolume, limits: InstanceLimits) throws {
        try transaction {
            let current = try db.query("SELECT overlay FROM instance_volumes WHERE instance_id = ?", [instanceID])
            let used = current.reduce(0) { $0 + ($1.bool("overlay") ? 2 : 1) }
            try checkAttachments(instanceID: instanceID, [v], existingDevices: used, limits: limits)
            let pos = try db.queryOne("SELECT COALESCE(MAX(position), -1) + 1 AS p FROM instance_volumes WHERE instance_id = ?",
                                      [instanceID])?.int("p") ?? 0
            try insertAttachment(instanceID: instanceID, v, position: Int(pos))
        }
    }

    /// Checks whether an attachment would be admitted, without writing.
    public func checkAttach(instanceID: String, _ v: InstanceVolume, limits: InstanceLimits) throws {
        let current = try db.query("SELECT overlay FROM instance_volumes WHERE instance_id = ?", [instanceID])
        let used = current.reduce(0) { $0 + ($1.bool("overlay") ? 2 : 1) }
        try checkAttachments(instanceID: instanceID, [v], existingDevices: used, limits: limits)
    }

    @discardableResult
    public func detachVolume(instanceID: String, volumeID: String) throws -> Bool {
        try db.run("DELETE FROM instance_volumes WHERE instance_id = ? AND volume_id = ?", [instanceID, volumeID]) > 0
    }

    // MARK: provisioner side

    /// Updates the observed state (and clears `state_error` unless given).
    public func setInstanceState(id: String, _ state: InstanceState, error: String? = nil) throws {
        try db.run("UPDATE instances SET state = ?, state_error = ? WHERE id = ?", [state.rawValue, error, id])
    }

    /// `Initializing` → `Running` when the guest agent answers; other states are left alone
    /// (the agent of a VM being stopped may still say hello). True when a row changed.
    @discardableResult
    public func markAgentReady(id: String) throws -> Bool {
        try db.run("UPDATE instances SET state = ?, state_error = NULL WHERE id = ? AND state = ?",
                   [InstanceState.running.rawValue, id, InstanceState.initializing.rawValue]) > 0
    }

    /// Writes back the runtime fields the Provisioner owns.
    public func updateInstanceRuntime(_ rec: InstanceRecord) throws {
        try db.run("""
            UPDATE instances SET state = ?, state_error = ?, ip = ?, mac = ?, hypervisor = ?, vmm_pid = ?, has_snapshot = ?,
                creating = ?, started_at = ?, stopped_at = ? WHERE id = ?
            """, [rec.state.rawValue, rec.stateError, rec.ip, rec.mac, rec.hypervisor, rec.vmmPID, rec.hasSnapshot,
                  rec.creating, rec.startedAt, rec.stoppedAt, rec.id])
    }

    /// Deletes the row and its attachments.
    public func deleteInstance(id: String) throws {
        try transaction {
            try db.run("DELETE FROM instance_volumes WHERE instance_id = ?", [id])
            try db.run("DELETE FROM instances WHERE id = ?", [id])
        }
    }
}

extension Store {
    /// Addresses held by networked instances other than `excluding` (Stopped ones hold nothing).
    public func takenAddresses(excluding id: String) throws -> (ips: [String], macs: [String]) {
        let rows = try db.query("""
            SELECT ip, mac FROM instances WHERE network_enabled = 1 AND state IN \(Self.allocatedStates) AND id != ?
            AND ip IS NOT NULL
            """, [id])
        return (rows.compactMap { $0.string("ip") }, rows.compactMap { $0.string("mac") })
    }
}
