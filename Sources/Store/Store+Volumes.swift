import SQLite
import JSON
import Model

/// One attachment of a volume, as the Volume resource shows it.
public struct VolumeAttachmentRecord: Sendable, Equatable {
    public var instanceID: String
    public var mountPath: String
    public var readonly: Bool
}

/// A volume row with its attachments.
public struct VolumeRecord: Sendable {
    public var id: String
    public var name: String
    public var sizeGB: Int
    public var status: String
    public var createdAt: String
    public var attachments: [VolumeAttachmentRecord]
}

extension Store {
    func volumeRecord(_ r: Row) throws -> VolumeRecord {
        let id = r.string("id") ?? ""
        let atts = try db.query("SELECT instance_id, mount_path, readonly FROM instance_volumes WHERE volume_id = ? ORDER BY instance_id",
                                [id]).map {
            VolumeAttachmentRecord(instanceID: $0.string("instance_id") ?? "", mountPath: $0.string("mount_path") ?? "",
                                   readonly: $0.bool("readonly"))
        }
        return VolumeRecord(id: id, name: r.string("name") ?? "", sizeGB: Int(r.int("size_gb") ?? 0),
                            status: r.string("status") ?? "ready", createdAt: r.string("created_at") ?? "", attachments: atts)
    }

    /// Ready volumes in id order.
    public func listVolumes() throws -> [VolumeRecord] {
        try db.query("SELECT * FROM volumes WHERE status = 'ready' ORDER BY id").map(volumeRecord)
    }

    public func volume(id: String) throws -> VolumeRecord? {
        try db.queryOne("SELECT * FROM volumes WHERE id = ?", [id]).map(volumeRecord)
    }

    /// Exact id, then exact name (no prefix for volumes). Volumes still being created are invisible.
    public func resolveVolume(_ key: String) throws -> Resolution<VolumeRecord> {
        if let r = try db.queryOne("SELECT * FROM volumes WHERE id = ? AND status = 'ready'", [key]) {
            return .found(try volumeRecord(r))
        }
        let byName = try db.query("SELECT * FROM volumes WHERE name = ? AND status = 'ready' LIMIT 2", [key])
        if byName.count == 1 { return .found(try volumeRecord(byName[0])) }
        return byName.isEmpty ? .notFound : .ambiguous
    }

    /// Reserves a volume id in status `creating`, enforcing the total-storage limit (GiB, 0 = none).
    public func insertVolume(id: String, name: String, sizeGB: Int, maxTotalGB: Int) throws {
        try transaction {
            if try db.queryOne("SELECT 1 FROM volumes WHERE id = ?", [id]) != nil {
                throw APIError(.alreadyExists, "volume with this ID already exists")
            }
            if maxTotalGB > 0 {
                let used = Int(try db.queryOne("SELECT COALESCE(SUM(size_gb), 0) AS s FROM volumes")?.int("s") ?? 0)
                if used + sizeGB > maxTotalGB {
                    throw APIError(.limitExceeded, "total volume storage would be \(used + sizeGB) GB, exceeds the limit of \(maxTotalGB) GB")
                }
            }
            try db.run("INSERT INTO volumes(id, name, size_gb, status, created_at) VALUES(?, ?, ?, 'creating', ?)",
                       [id, name, sizeGB, Timestamp.nowSeconds()])
        }
    }

    public func setVolumeReady(id: String, sizeGB: Int) throws {
        try db.run("UPDATE volumes SET status = 'ready', size_gb = ? WHERE id = ?", [sizeGB, id])
    }

    public func setVolumeStatus(id: String, _ status: String) throws {
        try db.run("UPDATE volumes SET status = ? WHERE id = ?", [status, id])
    }

    /// Marks a volume for deletion if nothing is attached; 409 `conflict` otherwise.
    public func beginVolumeDelete(id: String) throws {
        try transaction {
            if try db.queryOne("SELECT 1 FROM instance_volumes WHERE volume_id = ? LIMIT 1", [id]) != nil {
                throw APIError(.conflict, "volume is in use by an instance")
            }
            try db.run("UPDATE volumes SET status = 'deleting' WHERE id = ?", [id])
        }
    }

    public func deleteVolumeRow(id: String) throws {
        try db.run("DELETE FROM volumes WHERE id = ?", [id])
    }
}

extension Timestamp {
    /// Second precision, as volume `created_at` is in the contract.
    public static func nowSeconds() -> String {
        let s = now()
        guard let dot = s.firstIndex(of: ".") else { return s }
        return String(s[..<dot]) + "Z"
    }
}
