import Model

/// What an image build produced: the bootable read-only root disk and the OCI config to run.
public struct BuiltImage: Sendable, Equatable {
    /// Manifest digest the build was made from (`sha256:…`).
    public var digest: String
    /// Absolute path of the root filesystem disk (ext4, read-only for guests).
    public var diskPath: String
    /// Size of the disk file in bytes (apparent size).
    public var sizeBytes: Int64
    public var entrypoint: [String]?
    public var cmd: [String]?
    public var env: [String: String]
    public var workingDir: String?
    /// `os/arch[/variant]`, e.g. `linux/amd64`.
    public var platform: String

    public init(digest: String, diskPath: String, sizeBytes: Int64, entrypoint: [String]?, cmd: [String]?,
                env: [String: String], workingDir: String?, platform: String) {
        self.digest = digest; self.diskPath = diskPath; self.sizeBytes = sizeBytes
        self.entrypoint = entrypoint; self.cmd = cmd; self.env = env; self.workingDir = workingDir
        self.platform = platform
    }
}

/// Phase of a running build, reported with byte progress.
public enum ImageBuildPhase: String, Sendable { case pulling, converting }

/// Progress of a build: bytes of layer blobs downloaded (or found in the cache) out of the total.
public struct ImageBuildProgress: Sendable, Equatable {
    public var phase: ImageBuildPhase
    public var bytesDone: Int64
    public var bytesTotal: Int64
    public init(phase: ImageBuildPhase, bytesDone: Int64, bytesTotal: Int64) {
        self.phase = phase; self.bytesDone = bytesDone; self.bytesTotal = bytesTotal
    }
}

/// Turns OCI references into bootable disks. The job runner owns the database state; an
/// implementation owns registries, the blob cache and disk files. Errors are `APIError`s with the
/// contract's codes: `.notFound` (unknown repository/tag/digest), `.invalidName`, `.unavailable`
/// (registry unreachable / timed out), `.internalError` (anything else, with a message saying what).
public protocol ImageService: Sendable {
    /// Resolves the reference to the digest of what it names (index or manifest), in bounded time.
    func resolve(_ ref: ImageReference) throws(APIError) -> String
    /// Pulls (blobs shared and verified), unpacks with whiteouts, builds the disk. Calls `progress`
    /// as bytes arrive. Leaves nothing half-made on failure.
    func build(_ ref: ImageReference, digest: String,
               progress: @escaping @Sendable (ImageBuildProgress) -> Void) throws(APIError) -> BuiltImage
    /// Removes disks of digests not in `keepDigests`, and blobs no longer referenced by any kept image.
    func collectGarbage(keepDigests: Set<String>) throws(APIError)
}
