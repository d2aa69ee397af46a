import Foundation
import Model
import Store
import JSON

/// Dispatches each job kind to the manager that owns it. Capabilities this host lacks (no image
/// service, no hypervisor driver) fail the job with `dependency_missing` and a message that says
/// what is missing — never a fake success.
public final class JobHandlers: Sendable {
    let config: ProvisionerConfig
    let images: (any ImageService)?
    let volumes: VolumeManager
    let instances: InstanceManager
    let log = Log("prov.jobs")

    public init(config: ProvisionerConfig, images: (any ImageService)?, instances: InstanceManager) {
        self.config = config
        self.images = images
        self.volumes = VolumeManager(config: config)
        self.instances = instances
    }

    func imageService() throws(APIError) -> any ImageService {
        guard let images else {
            throw APIError(.dependencyMissing, "this Provisioner has no image service configured; images cannot be pulled")
        }
        return images
    }

    /// Runs one job. `answer` lets a job reply to its requester before it ends.
    func run(_ job: JobRecord, store: Store, answer: @escaping () -> Void) throws {
        switch job.kind {
        case .pull: try pull(job, store: store)
        case .imageGC: try collectGarbage(store: store)
        case .volumeCreate: try volumes.create(job, store: store)
        case .volumeDelete: try volumes.delete(job, store: store)
        case .create, .start, .stop, .standby, .restore, .delete, .attach, .detach:
            try instances.run(job, store: store)
        }
    }

    /// Resolves the reference (bounded), records name → digest and queues the build if needed.
    func pull(_ job: JobRecord, store: Store) throws {
        let name = job.payload["name"]?.stringValue ?? job.target
        let ref = try ImageReference.parse(name)
        let digest = try imageService().resolve(ref)
        let queued = try store.linkImage(name: ref.normalized, repository: ref.repository, digest: digest,
                                         sourceRef: ref.pinned(to: digest).normalized)
        log.info(queued ? "image build queued" : "image already known", ["image": ref.normalized, "digest": digest])
    }

    /// Builds one image: pulling → converting → ready | failed, with byte progress in the row.
    func runBuild(_ b: ImageBuildRecord, store: Store) {
        let meta = ["digest": b.digest, "source": b.sourceRef]
        log.info("image build started", meta)
        do {
            let ref = try ImageReference.parse(b.sourceRef)
            let svc = try imageService()
            let progressStore = ProgressWriter(dbPath: config.dbPath, digest: b.digest)
            let built = try svc.build(ref, digest: b.digest) { p in progressStore.write(p) }
            try store.finishImageBuild(digest: b.digest, diskPath: built.diskPath, sizeBytes: built.sizeBytes,
                                       entrypoint: built.entrypoint, cmd: built.cmd, env: built.env,
                                       workingDir: built.workingDir, platform: built.platform)
            log.info("image ready", meta.merging(["bytes": String(built.sizeBytes)]) { a, _ in a })
        } catch {
            let msg = (error as? APIError)?.message ?? "\(error)"
            try? store.failImageBuild(digest: b.digest, error: msg)
            log.warning("image build failed", meta.merging(["error": msg]) { a, _ in a })
        }
    }

    func collectGarbage(store: Store) throws {
        let dropped = try store.deleteUnusedBuilds()
        guard let images else { return }
        try images.collectGarbage(keepDigests: try store.digestsInUse())
        if !dropped.isEmpty { log.info("image garbage collected", ["digests": dropped.joined(separator: ",")]) }
    }
}

/// Writes build progress from the service's callback thread with its own connection, at most
/// every 100 ms (plus phase changes).
final class ProgressWriter: @unchecked Sendable {
    let dbPath: String
    let digest: String
    let lock = NSLock()
    var store: Store?
    var last = Date.distantPast
    var lastPhase: ImageBuildPhase?

    init(dbPath: String, digest: String) { self.dbPath = dbPath; self.digest = digest }

    func write(_ p: ImageBuildProgress) {
        lock.lock(); defer { lock.unlock() }
        let now = Date()
        guard p.phase != lastPhase || now.timeIntervalSince(last) > 0.1 || p.bytesDone == p.bytesTotal else { return }
        last = now
        lastPhase = p.phase
        if store == nil { store = try? Store(path: dbPath) }
        try? store?.updateImageBuildProgress(digest: digest, status: p.phase.rawValue, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal)
    }
}
