import Foundation
import Model

/// Builds a volume disk from a tar.gz: hardened extraction into a scratch directory, then an ext4
/// image sized to the content. Returns the disk's size in bytes.
enum ArchiveVolumeBuilder {
    static func build(archive: String, into disk: String, maxBytes: Int64, scratch: String) throws -> Int64 {
        throw APIError(.notImplemented, "volumes from archives are not available in this build yet")
    }
}
