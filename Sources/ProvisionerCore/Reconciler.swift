import Foundation
import Model
import Store

/// Runs once at start-up, before any job is claimed: interrupted jobs and builds are re-queued or
/// rolled back so the store tells the truth again.
public struct Reconciler {
    let config: ProvisionerConfig
    let instances: InstanceManager
    let log = Log("prov.reconcile")

    public init(config: ProvisionerConfig, instances: InstanceManager) {
        self.config = config
        self.instances = instances
    }

    public func run(store: Store) throws {
        try Self.reconcileQueue(store: store, config: config, log: log)
        try instances.reconcile(store: store)
        try store.pruneFinishedJobs()
    }

    /// The queue part of the start-up reconcile: interrupted builds and idempotent jobs go back
    /// to the queue with a backoff until they have been started `JOB_MAX_ATTEMPTS` times, then
    /// fail with an error on their resource; other interrupted jobs fail at once (rolled back).
    static func reconcileQueue(store: Store, config: ProvisionerConfig, log: Log) throws {
        let retry = config.jobRetry
        let builds = try store.reconcileInterruptedBuilds(
            maxAttempts: retry.maxAttempts, backoffMillis: { retry.backoffMillis(afterAttempts: $0) },
            error: { "the image build was interrupted \($0) times (the Provisioner stopped during it each time); "
                     + "giving up. POST /images again to retry" })
        if !builds.requeued.isEmpty {
            log.warning("re-queued interrupted image builds", ["digests": builds.requeued.joined(separator: ",")])
        }
        if !builds.failed.isEmpty {
            log.error("image builds failed after repeated interruptions",
                      ["digests": builds.failed.joined(separator: ","), "max_attempts": String(retry.maxAttempts)])
        }
        for job in try store.runningJobs() {
            switch job.kind {
            case .pull, .imageGC, .volumeDelete, .delete:
                guard retry.allowsRetry(afterAttempts: job.attempts) else {
                    // A job that keeps dying with the Provisioner: stop, and say so on its resource.
                    try store.giveUpJob(job, error: APIError(.internalError,
                        "\(job.kind.rawValue) was interrupted \(job.attempts) times (the Provisioner stopped during it each time); "
                        + "giving up — retry the request"))
                    log.error("gave up an interrupted job", ["job_id": String(job.id), "kind": job.kind.rawValue,
                                                             "target": job.target, "attempts": String(job.attempts)])
                    continue
                }
                // Idempotent: run again from the start, after a backoff.
                try store.requeueJob(id: job.id, notBefore: unixMillis() + retry.backoffMillis(afterAttempts: job.attempts))
            default:
                try store.finishJob(id: job.id, error: APIError(.internalError,
                    "\(job.kind.rawValue) was interrupted by a Provisioner restart; its partial work was rolled back — retry the request"))
                if job.kind == .volumeCreate {
                    try? FileManager.default.removeItem(atPath: "\(config.volumesDir)/\(job.target)")
                    try? store.deleteVolumeRow(id: job.target)
                    if let archive = job.payload["archive"]?.stringValue { unlink(archive) }
                }
            }
            log.warning("reconciled an interrupted job", ["job_id": String(job.id), "kind": job.kind.rawValue])
        }
    }
}
