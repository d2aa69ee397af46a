import Foundation
import Model
import OCI
import Disk

/// Builds a volume disk from a tar.gz: hardened extraction into a scratch directory (no path
/// escapes, no absolute or escaping symlinks, hard links only inside, no devices or FIFOs, a byte
/// limit of `size_gb` that stops tar bombs and lying headers), then an ext4 image sized to the
/// content. Returns the disk's size in bytes; the scratch directory is always removed.
enum ArchiveVolumeBuilder {
    static func build(archive: String, into disk: String, maxBytes: Int64, scratch: String) throws -> Int64 {
        try? FileManager.default.removeItem(atPath: scratch)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        do {
            _ = try LayerUnpacker.unpack([LayerSource(path: archive, compression: .gzip, label: "archive")], into: scratch,
                                         limits: UnpackLimits(maxBytes: maxBytes, maxEntries: 1_000_000, plainArchive: true))
        } catch {
            switch error {
            case .limitExceeded(let why):
                throw APIError(.archiveTooLarge, "archive is larger than the volume's size_gb allows: \(why)")
            case .unsafeLayer(let why):
                throw APIError(.invalidRequest, "archive rejected: \(why)")
            case .io:
                // Host trouble (paths, errno): the detail goes to the log, not to the client.
                Log("prov.volumes").error("archive extraction failed", ["error": error.description])
                throw APIError(.internalError, "the archive could not be extracted on the host (see the Provisioner log)")
            default:
                throw APIError(.invalidRequest, "archive could not be read (a gzip-compressed tar is expected): \(error)")
            }
        }
        do {
            return try DiskImage.makeExt4(from: scratch, at: disk, label: "volume")
        } catch {
            throw APIError(.internalError, "building the volume disk failed: \(error)")
        }
    }
}
