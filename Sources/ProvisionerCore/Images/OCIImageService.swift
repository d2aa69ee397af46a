import Disk
import Foundation
import Model
import OCI
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Settings of `OCIImageService`. Defaults suit a single provisioner on one host.
public struct OCIImageServiceConfig: Sendable {
    /// Root of all state (`DATA_DIR`): blobs in `system/oci-cache`, scratch in `system/builds`,
    /// disks in `images/<digesthex>/`.
    public var dataDir: String
    /// Registries spoken to over plain HTTP, as `host[:port]` (e.g. `127.0.0.1:5000`).
    public var insecureRegistries: Set<String>
    /// Docker-style auth file; nil = `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    public var authFile: String?
    /// Layers downloaded at once.
    public var parallelLayers: Int
    /// Tar-bomb limits over all layers of one image.
    public var limits: UnpackLimits
    /// Seconds `resolve` may take in all (token round trip included).
    public var resolveTimeout: Double
    public var retry: RetryPolicy
    public var platform: Platform
    /// Bounds on the sizes a registry declares (per layer, per image, config).
    public var pullLimits: PullLimits

    public init(dataDir: String, insecureRegistries: Set<String> = [], authFile: String? = nil,
                parallelLayers: Int = 3, limits: UnpackLimits = UnpackLimits(), resolveTimeout: Double = 10,
                retry: RetryPolicy = RetryPolicy(), platform: Platform = .linuxAMD64, pullLimits: PullLimits = PullLimits()) {
        self.dataDir = dataDir; self.insecureRegistries = insecureRegistries; self.authFile = authFile
        self.parallelLayers = parallelLayers; self.limits = limits; self.resolveTimeout = resolveTimeout
        self.retry = retry; self.platform = platform; self.pullLimits = pullLimits
    }

    /// One bound for an image (`MAX_IMAGE_SIZE`): its compressed layers, each layer, and what
    /// they expand to when unpacked.
    public mutating func limitImageSize(to bytes: Int64) {
        pullLimits.maxImageBytes = bytes
        pullLimits.maxBlobBytes = bytes
        limits.maxBytes = bytes
    }
}

/// The record kept next to each disk (`images/<hex>/image.json`): what the image needs to run, and
/// which cached blobs it came from, so GC knows what to keep.
struct ImageRecord: Codable, Equatable {
    var digest: String
    var platform: String
    var manifestDigests: [String]
    var configDigest: String
    var layerDigests: [String]
    var entrypoint: [String]?
    var cmd: [String]?
    var env: [String: String]
    var workingDir: String?

    var blobDigests: [String] { manifestDigests + [configDigest] + layerDigests }
}

/// Pulls OCI images with our registry client, unpacks them (whiteouts, no path escapes) and builds
/// journal-less ext4 root disks. Builds of the same digest are serialised; nothing half-made stays
/// behind on failure. Thread-safe.
public final class OCIImageService: ImageService {
    public let config: OCIImageServiceConfig
    let store: BlobStore
    let imagesDir: String
    let buildsDir: String
    let log = Log("prov.images")

    private struct State {
        var registry: RegistryClient
        var auth: DockerAuthConfig
        /// Digest hexes being built.
        var building: Set<String> = []
        /// Blob digests in use by running builds (GC leaves them).
        var pinned: [String: Int] = [:]
    }
    private let state: Mutex<State>
    private let buildLocks = KeyedLocks()

    public init(config: OCIImageServiceConfig) throws(APIError) {
        self.config = config
        imagesDir = config.dataDir + "/images"
        buildsDir = config.dataDir + "/system/builds"
        do {
            store = try BlobStore(root: config.dataDir + "/system/oci-cache")
            try FileManager.default.createDirectory(atPath: imagesDir, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: buildsDir, withIntermediateDirectories: true)
        } catch {
            throw APIError(.internalError, "cannot prepare image directories under \(config.dataDir): \(error)")
        }
        let auth = try Self.loadAuth(config)
        state = Mutex(State(registry: Self.makeRegistry(config, auth), auth: auth))
    }

    // MARK: ImageService

    public func resolve(_ ref: ImageReference) throws(APIError) -> String {
        let registry = try currentRegistry()
        do {
            return try registry.resolve(ref, timeout: config.resolveTimeout).digest
        } catch {
            throw Self.apiError(error, ref: ref, during: "resolving")
        }
    }

    public func build(_ ref: ImageReference, digest: String,
                      progress: @escaping @Sendable (ImageBuildProgress) -> Void) throws(APIError) -> BuiltImage {
        do {
            return try buildUnchecked(ref, digest: digest, progress: progress)
        } catch let e as ImageFault {
            throw e.error
        } catch let e as APIError where e.code != .internalError {
            throw e
        } catch {
            // Host trouble: the full story (paths, errno) goes to the log; the image's error,
            // which clients see, only says where it happened.
            log.error("image build failed on the host", ["image": ref.normalized, "digest": digest, "detail": "\(error)"])
            throw APIError(.internalError, "building \(ref.normalized) failed on the host (details in the Provisioner log)")
        }
    }

    /// An error about the image itself (its registry, its manifest, its layers), whose message is
    /// fit for the client.
    struct ImageFault: Error { let error: APIError }

    private func buildUnchecked(_ ref: ImageReference, digest: String,
                                progress: @escaping @Sendable (ImageBuildProgress) -> Void) throws -> BuiltImage {
        let hex: String
        do { hex = try BlobStore.hex(of: digest) } catch { throw ImageFault(error: APIError(.invalidName, "invalid image digest \(digest)")) }
        buildLocks.acquire(hex)
        defer { buildLocks.release(hex) }
        if let done = existing(hex) { return done }

        state.withLock { _ = $0.building.insert(hex) }
        let pinsLock = Mutex<[String]>([])
        defer {
            let used = pinsLock.withLock { $0 }
            state.withLock { s in
                s.building.remove(hex)
                for d in used {
                    s.pinned[d, default: 1] -= 1
                    if s.pinned[d] ?? 0 <= 0 { s.pinned[d] = nil }
                }
            }
        }
        let pin: @Sendable (String) -> Void = { [self] d in
            self.state.withLock { $0.pinned[d, default: 0] += 1 }
            pinsLock.withLock { $0.append(d) }
        }

        let registry = try currentRegistry()
        let work = buildsDir + "/" + hex + ".tmp"
        try removeTree(work)
        do { try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true) } catch {
            throw APIError(.internalError, "cannot create build directory \(work): \(error)")
        }
        defer { try? removeTree(work) }

        // Pulling.
        progress(ImageBuildProgress(phase: .pulling, bytesDone: 0, bytesTotal: 0))
        let puller = ImagePuller(registry: registry, store: store, parallelLayers: config.parallelLayers,
                                 platform: config.platform, limits: config.pullLimits)
        let pulled: PulledImage
        do {
            pulled = try puller.pull(ref, digest: digest, progress: { done, total in
                progress(ImageBuildProgress(phase: .pulling, bytesDone: done, bytesTotal: total))
            }, pin: pin)
        } catch {
            log.warning("pull failed", ["image": ref.normalized, "detail": error.description])
            throw ImageFault(error: Self.apiError(error, ref: ref, during: "pulling"))
        }
        let total = pulled.layerBytes

        // Converting.
        progress(ImageBuildProgress(phase: .converting, bytesDone: total, bytesTotal: total))
        let rootfs = work + "/rootfs"
        do {
            _ = try LayerUnpacker.unpack(try pulled.layerSources(in: store), into: rootfs, limits: config.limits)
        } catch {
            log.warning("unpack failed", ["image": ref.normalized, "detail": error.description])
            throw ImageFault(error: Self.apiError(error, ref: ref, during: "unpacking"))
        }
        let imageDir = imagesDir + "/" + hex
        let createdDir = mkdir(imageDir, 0o755) == 0
        guard createdDir || errno == EEXIST else {
            throw APIError(.internalError, "cannot create \(imageDir): \(String(cString: strerror(errno)))")
        }
        let tmpDisk = work + "/rootfs.ext4"
        var committed = false
        defer {
            if !committed {
                unlink(imageDir + "/image.json.tmp")
                if createdDir { _ = rmdir(imageDir) }
            }
        }
        do {
            try DiskImage.makeExt4(from: rootfs, at: tmpDisk, label: "rootfs")
        } catch {
            throw APIError(.internalError, "convert to ext4: \(error)")
        }
        try removeTree(rootfs)
        try fsyncPath(tmpDisk)

        let env = pulled.config.environment
        let run = pulled.config.config
        let record = ImageRecord(digest: digest, platform: pulled.platform.description, manifestDigests: pulled.manifestDigests,
                                 configDigest: pulled.configDigest, layerDigests: pulled.layers.map(\.digest),
                                 entrypoint: nonEmpty(run?.Entrypoint), cmd: nonEmpty(run?.Cmd), env: env,
                                 workingDir: run?.WorkingDir.flatMap { $0.isEmpty ? nil : $0 })
        let finalDisk = imageDir + "/rootfs.ext4"
        do {
            let data = try JSONEncoder().encode(record)
            let tmpRecord = imageDir + "/image.json.tmp"
            guard FileManager.default.createFile(atPath: tmpRecord, contents: data) else {
                throw APIError(.internalError, "cannot write \(tmpRecord)")
            }
            try fsyncPath(tmpRecord)
            // The disk lands first and the record last: a record means a complete image.
            guard rename(tmpDisk, finalDisk) == 0 else {
                throw APIError(.internalError, "cannot move the disk to \(finalDisk): \(String(cString: strerror(errno)))")
            }
            guard rename(tmpRecord, imageDir + "/image.json") == 0 else {
                let e = errno
                unlink(finalDisk)
                throw APIError(.internalError, "cannot write \(imageDir)/image.json: \(String(cString: strerror(e)))")
            }
        } catch let e as APIError {
            throw e
        } catch {
            throw APIError(.internalError, "cannot write the image record: \(error)")
        }
        try? fsyncPath(imageDir)
        committed = true
        return try built(record, hex: hex)
    }

    public func collectGarbage(keepDigests: Set<String>) throws(APIError) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: imagesDir)) ?? []
        var referenced = Set<String>()
        for name in names {
            let digest = "sha256:" + name
            if keepDigests.contains(digest) {
                if let r = record(name) { referenced.formUnion(r.blobDigests) }
                continue
            }
            guard buildLocks.tryAcquire(name) else { continue }   // being built right now
            defer { buildLocks.release(name) }
            try removeTree(imagesDir + "/" + name)
        }
        for digest in store.allDigests() where !referenced.contains(digest) {
            // Checked and removed under the state lock so a build cannot pin it in between.
            state.withLock { s in
                if s.pinned[digest] == nil { store.remove(digest) }
            }
        }
        let idle = state.withLock { $0.building.isEmpty }
        if idle {
            store.removeTemps()
            for leftover in (try? FileManager.default.contentsOfDirectory(atPath: buildsDir)) ?? [] {
                try? removeTree(buildsDir + "/" + leftover)
            }
        }
    }

    // MARK: Helpers

    /// Disk path an image of `digest` has (or will have).
    public func diskPath(for digest: String) -> String? {
        guard let hex = try? BlobStore.hex(of: digest) else { return nil }
        return imagesDir + "/" + hex + "/rootfs.ext4"
    }

    private func existing(_ hex: String) -> BuiltImage? {
        guard let r = record(hex), FileManager.default.fileExists(atPath: imagesDir + "/" + hex + "/rootfs.ext4") else { return nil }
        return try? built(r, hex: hex)
    }

    private func record(_ hex: String) -> ImageRecord? {
        guard let data = FileManager.default.contents(atPath: imagesDir + "/" + hex + "/image.json") else { return nil }
        return try? JSONDecoder().decode(ImageRecord.self, from: data)
    }

    private func built(_ r: ImageRecord, hex: String) throws(APIError) -> BuiltImage {
        let disk = imagesDir + "/" + hex + "/rootfs.ext4"
        var st = stat()
        guard stat(disk, &st) == 0 else { throw APIError(.internalError, "image disk \(disk) is missing") }
        return BuiltImage(digest: r.digest, diskPath: disk, sizeBytes: Int64(st.st_size), entrypoint: r.entrypoint,
                          cmd: r.cmd, env: r.env, workingDir: r.workingDir, platform: r.platform)
    }

    private func nonEmpty(_ a: [String]?) -> [String]? { (a?.isEmpty ?? true) ? nil : a }

    private func currentRegistry() throws(APIError) -> RegistryClient {
        let auth = try Self.loadAuth(config)
        return state.withLock { s in
            if s.auth != auth { s.auth = auth; s.registry = Self.makeRegistry(config, auth) }
            return s.registry
        }
    }

    private static func loadAuth(_ config: OCIImageServiceConfig) throws(APIError) -> DockerAuthConfig {
        guard let path = config.authFile ?? DockerAuthConfig.defaultPath() else { return DockerAuthConfig() }
        do { return try DockerAuthConfig.load(path: path) } catch {
            throw APIError(.internalError, "registry auth file: \(error)")
        }
    }

    private static func makeRegistry(_ config: OCIImageServiceConfig, _ auth: DockerAuthConfig) -> RegistryClient {
        RegistryClient(options: RegistryOptions(insecureRegistries: config.insecureRegistries, auth: auth, retry: config.retry))
    }

    /// OCI failures in the contract's terms. Messages name what went wrong with the image, never
    /// a host path or errno: local file-system trouble (`.io`) is reported without its detail
    /// (the caller logs it).
    static func apiError(_ e: OCIError, ref: ImageReference, during: String) -> APIError {
        let what = "\(during == "pulling" ? "pull" : during) \(ref.normalized)"
        switch e {
        case .notFound: return APIError(.notFound, "image not found: \(ref.normalized)")
        case .transport(let m): return APIError(.unavailable, "registry unavailable while \(during) \(ref.normalized): \(m)")
        case .unauthorized(let m): return APIError(.internalError, "registry denied access while \(during) \(ref.normalized): \(m)")
        case .limitExceeded(let m): return APIError(.internalError, "\(what): image too large: \(m)")
        case .io: return APIError(.internalError, "\(what): failed on the host (details in the Provisioner log)")
        default: return APIError(.internalError, "\(what): \(e)")
        }
    }

    private func removeTree(_ path: String) throws(APIError) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        do { try FileManager.default.removeItem(atPath: path) } catch {
            throw APIError(.internalError, "cannot remove \(path): \(error.localizedDescription)")
        }
    }

    private func fsyncPath(_ path: String) throws(APIError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw APIError(.internalError, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw APIError(.internalError, "fsync \(path): \(String(cString: strerror(errno)))") }
    }
}

