import Foundation
import Model
import Store
import JSON

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
        do {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            if let archive {
                let built = try ArchiveVolumeBuilder.build(archive: archive, into: d + "/data.raw", maxBytes: Int64(sizeGB) * Size.GiB,
                                                           scratch: d + "/extract.tmp")
                try store.setVolumeReady(id: id, sizeGB: max(1, Int((built + Size.GiB - 1) / Size.GiB)))
            } else {
                try makeEmptyExt4(path: d + "/data.raw", bytes: Int64(sizeGB) * Size.GiB)
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

    /// A sparse file of `bytes` formatted as ext4.
    func makeEmptyExt4(path: String, bytes: Int64) throws {
        FileManager.default.createFile(atPath: path, contents: nil)
        let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try fh.truncate(atOffset: UInt64(bytes))
        try fh.close()
        try Tool.run("/sbin/mkfs.ext4", ["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", path])
    }
}

/// Runs host tools and turns failures into errors that say what to do.
enum Tool {
    @discardableResult
    static func run(_ path: String, _ args: [String]) throws -> String {
        let exe = FileManager.default.isExecutableFile(atPath: path) ? path : "/usr/bin/env"
        let argv = exe == path ? args : [URL(fileURLWithPath: path).lastPathComponent] + args
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = argv
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        do { try p.run() } catch {
            throw APIError(.dependencyMissing, "\(path) cannot be run: \(error) — install e2fsprogs")
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw APIError(.internalError, "\(URL(fileURLWithPath: path).lastPathComponent) failed (exit \(p.terminationStatus)): \(text.suffix(400))")
        }
        return text
    }
}
