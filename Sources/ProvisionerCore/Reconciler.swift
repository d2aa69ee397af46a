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
        let builds = try store.requeueInterruptedBuilds()
        if builds > 0 { log.warning("re-queued interrupted image builds", ["count": String(builds)]) }
        for job in try store.runningJobs() {
            switch job.kind {
            case .pull, .imageGC, .volumeDelete, .delete:
                // Idempotent: run again from the start.
                try store.requeueJob(id: job.id)
            default:
                try store.finishJob(id: job.id, error: APIError(.internalError,
                    "\(job.kind.rawValue) was interrupted by a Provisioner restart; its partial work was rolled back — retry the request"))
                if job.kind == .volumeCreate {
                    try? FileManager.default.removeItem(atPath: "\(config.volumesDir)/\(job.target)")
                    try? store.deleteVolumeRow(id: job.target)
                }
            }
            log.warning("reconciled an interrupted job", ["job_id": String(job.id), "kind": job.kind.rawValue])
        }
        try instances.reconcile(store: store)
        try store.pruneFinishedJobs()
    }
}
