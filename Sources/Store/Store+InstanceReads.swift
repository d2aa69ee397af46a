import SQLite
import JSON
import Model

/// Reading instances. Every read is one statement that brings an instance's columns and its
/// attachments together (a LEFT JOIN: one row per attachment, or one row with NULL attachment
/// columns), read by column position: one read transaction, no `Row`, no name lookups.
extension Store {
    /// The columns every instance read selects, in `InstanceColumn` order.
    static let instanceSelect = """
        SELECT i.id, i.name, i.image, i.image_digest, i.state, i.state_error, i.size, i.hotplug_size, i.overlay_size,
               i.vcpus, i.env, i.network_enabled, i.ip, i.mac, i.hypervisor, i.vmm_pid, i.has_snapshot, i.creating,
               i.skip_guest_agent, i.created_at, i.started_at, i.stopped_at,
               v.volume_id, v.mount_path, v.readonly, v.overlay, v.overlay_size, v.position
        FROM instances i LEFT JOIN instance_volumes v ON v.instance_id = i.id
        """
    // Rows of one instance must be adjacent: every read orders by id.
    static let instanceByIDSQL = instanceSelect + " WHERE i.id = ? ORDER BY i.id"
    static let instancesByNameSQL = instanceSelect
        + " WHERE i.id IN (SELECT id FROM instances WHERE name = ? LIMIT 2) ORDER BY i.id"
    static let instancesByPrefixSQL = instanceSelect
        + " WHERE i.id IN (SELECT id FROM instances WHERE id >= ? AND id < ? LIMIT 2) ORDER BY i.id"
    static let allInstancesSQL = instanceSelect + " ORDER BY i.id"

    /// Column positions of `instanceSelect`.
    enum InstanceColumn {
        static let id: Int32 = 0, name: Int32 = 1, image: Int32 = 2, imageDigest: Int32 = 3, state: Int32 = 4
        static let stateError: Int32 = 5, size: Int32 = 6, hotplugSize: Int32 = 7, overlaySize: Int32 = 8, vcpus: Int32 = 9
        static let env: Int32 = 10, networkEnabled: Int32 = 11, ip: Int32 = 12, mac: Int32 = 13, hypervisor: Int32 = 14
        static let vmmPID: Int32 = 15, hasSnapshot: Int32 = 16, creating: Int32 = 17, skipGuestAgent: Int32 = 18
        static let createdAt: Int32 = 19, startedAt: Int32 = 20, stoppedAt: Int32 = 21
        static let volumeID: Int32 = 22, mountPath: Int32 = 23, readonly: Int32 = 24, overlay: Int32 = 25
        static let volumeOverlaySize: Int32 = 26, position: Int32 = 27
    }

    /// All instances in id order.
    public func listInstances() throws -> [InstanceRecord] {
        try readInstances(db.prepare(Self.allInstancesSQL))
    }

    public func instance(id: String) throws -> InstanceRecord? {
        let s = try db.prepare(Self.instanceByIDSQL)
        try s.bind(id, at: 1)
        var found = try readInstances(s)
        return found.popLast()  // at most one; moved out rather than copied
    }

    /// Exact id, then exact name, then unique id prefix (contract §0).
    public func resolveInstance(_ key: String) throws -> Resolution<InstanceRecord> {
        if let r = try instance(id: key) { return .found(r) }
        let byName = try db.prepare(Self.instancesByNameSQL)
        try byName.bind(key, at: 1)
        var named = try readInstances(byName)
        if named.count == 1 { return .found(named.removeLast()) }
        if named.count > 1 { return .ambiguous }
        guard !key.isEmpty, CUID2.looksLikeID(key) else { return .notFound }
        let byPrefix = try db.prepare(Self.instancesByPrefixSQL)
        try byPrefix.bind(key, at: 1)
        try byPrefix.bind(key + "\u{10FFFF}", at: 2)
        var prefixed = try readInstances(byPrefix)
        if prefixed.count == 1 { return .found(prefixed.removeLast()) }
        return prefixed.isEmpty ? .notFound : .ambiguous
    }

    /// Runs a bound `instanceSelect` statement to the end and folds its rows into records
    /// (attachments in `position` order), then resets it.
    func readInstances(_ s: Statement) throws -> [InstanceRecord] {
        defer { s.reset() }
        var out: [InstanceRecord] = []
        var positions: [Int64] = []
        while try s.step() {
            let id = s.string(InstanceColumn.id) ?? ""
            if out.last?.id != id {
                finishVolumes(&out, positions)
                out.append(instanceRecord(s, id: id))
                positions.removeAll(keepingCapacity: true)
            }
            if let volumeID = s.string(InstanceColumn.volumeID) {
                out[out.count - 1].volumes.append(InstanceVolume(
                    volumeID: volumeID, mountPath: s.string(InstanceColumn.mountPath) ?? "", readonly: s.bool(InstanceColumn.readonly),
                    overlay: s.bool(InstanceColumn.overlay), overlaySize: s.int(InstanceColumn.volumeOverlaySize)))
                positions.append(s.int(InstanceColumn.position) ?? 0)
            }
        }
        finishVolumes(&out, positions)
        return out
    }

    /// The join brings attachments in key order: put the last record's in device order.
    private func finishVolumes(_ out: inout [InstanceRecord], _ positions: [Int64]) {
        guard positions.count > 1, !out.isEmpty else { return }
        let vols = out[out.count - 1].volumes
        out[out.count - 1].volumes = positions.indices.sorted { positions[$0] < positions[$1] }.map { vols[$0] }
    }

    /// The instance columns of the current row (no attachments).
    private func instanceRecord(_ s: Statement, id: String) -> InstanceRecord {
        typealias C = InstanceColumn
        var rec = InstanceRecord(
            id: id, name: s.string(C.name) ?? "", image: s.string(C.image) ?? "", imageDigest: s.string(C.imageDigest) ?? "",
            state: InstanceState(rawValue: s.string(C.state) ?? "") ?? .unknown, size: s.int(C.size) ?? 0,
            hotplugSize: s.int(C.hotplugSize) ?? 0, overlaySize: s.int(C.overlaySize) ?? 0, vcpus: Int(s.int(C.vcpus) ?? 0),
            env: (s.withText(C.env) { JSON.parseStringMap($0) } ?? nil) ?? [:], networkEnabled: s.bool(C.networkEnabled),
            hypervisor: s.string(C.hypervisor), createdAt: s.string(C.createdAt) ?? "", volumes: [])
        rec.stateError = s.string(C.stateError)
        rec.ip = s.string(C.ip)
        rec.mac = s.string(C.mac)
        rec.vmmPID = s.int(C.vmmPID).map(Int.init)
        rec.hasSnapshot = s.bool(C.hasSnapshot)
        rec.creating = s.bool(C.creating)
        rec.skipGuestAgent = s.bool(C.skipGuestAgent)
        rec.startedAt = s.string(C.startedAt)
        rec.stoppedAt = s.string(C.stoppedAt)
        return rec
    }
}
