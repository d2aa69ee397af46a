import Foundation
import Model
import Store
import JSON
import Disk

/// Volumes on disk: `<dataDir>/volumes/<id>/data.raw`, a sparse ext4 file. Archive-backed volumes
/// are extracted (hardened) and built to their content size.
public final class VolumeManager: Sendable {
    let config: ProvisionerConfig
    let log = Log("prov.volumes")

    public init(config: ProvisionerConfig) { self.config = config }

    func dir(_ id: String) -> String { "\(config.volumesDir)/\(id)" }

    func create(_ job: JobRecord, store: Store) throws {
        let id = job.target
        let sizeGB = Int(job.payload["size_gb"]?.intValue ?? 1)
        let archive = job.payload["archive"]?.stringValue
        defer { if let archive { try? FileManager.default.removeItem(atPath: archive) } }
        let d = dir(id)
        let (bytes, overflow) = Int64(sizeGB).multipliedReportingOverflow(by: Size.GiB)
        guard sizeGB > 0, !overflow else {
            try? store.deleteVolumeRow(id: id)
            throw APIError(.invalidField, "size_gb \(sizeGB) is out of range")
        }
        do {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            if let archive {
                let built = try ArchiveVolumeBuilder.build(archive: archive, into: d + "/data.raw", maxBytes: bytes,
                                                           scratch: d + "/extract.tmp")
                try store.setVolumeReady(id: id, sizeGB: max(1, Int(built / Size.GiB + (built % Size.GiB == 0 ? 0 : 1))))
            } else {
                try makeEmptyExt4(path: d + "/data.raw", bytes: bytes)
                try store.setVolumeReady(id: id, sizeGB: sizeGB)
            }
            log.info("volume created", ["volume_id": id, "size_gb": String(sizeGB)])
        } catch {
            try? FileManager.default.removeItem(atPath: d)
            try? store.deleteVolumeRow(id: id)
            if let e = error as? APIError { throw e }
            throw APIError(.internalError, "creating volume \(id) failed: \(error)")
        }
    }

    func delete(_ job: JobRecord, store: Store) throws {
        let id = job.target
        try? FileManager.default.removeItem(atPath: dir(id))
        try store.deleteVolumeRow(id: id)
    }

    /// A sparse file of `bytes` formatted as ext4 (with a journal: volumes take writes).
    func makeEmptyExt4(path: String, bytes: Int64) throws {
        try DiskImage.makeEmptyExt4(at: path, size: bytes, label: "volume")
    }
}
