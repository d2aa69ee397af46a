import Foundation
import Model
import Store
import JSON
import Wakeup

/// Runs the queue: a wake-up listener, `workers` threads for instance/volume/pull jobs and
/// `maxConcurrentBuilds` threads for image builds. Each thread owns its own `Store`. Work on one
/// target is serial (the claim query skips targets with a running job).
public final class JobRunner: @unchecked Sendable {
    let config: ProvisionerConfig
    let handlers: JobHandlers
    let log = Log("prov.jobs")
    let cond = NSCondition()
    var generation = 0          // bumped on every wake-up, guarded by `cond`
    var stopping = false        // guarded by `cond`
    var threads: [Thread] = []
    let done = DispatchGroup()

    public init(config: ProvisionerConfig, handlers: JobHandlers) {
        self.config = config
        self.handlers = handlers
    }

    /// Wakes every idle worker (new work may be there).
    public func poke() {
        cond.lock(); generation += 1; cond.broadcast(); cond.unlock()
    }

    /// Starts the listener and the workers; returns at once.
    public func start() throws {
        // Bound here so a bind failure stops start-up; then owned by the listener thread alone.
        nonisolated(unsafe) let receiver = try WakeupReceiver(path: config.wakeSocket)
        spawn("wake") { [self] in
            while !isStopping() {
                receiver.wait(timeoutMs: Int32(config.pollSeconds * 1000))
                poke()
            }
        }
        for i in 0..<config.workers { spawn("job-\(i)") { [self] in workerLoop(builds: false) } }
        spawn("watch") { [self] in watchLoop() }
        for i in 0..<config.maxConcurrentBuilds { spawn("build-\(i)") { [self] in workerLoop(builds: true) } }
    }

    /// Stops claiming work and waits for running jobs to finish.
    public func stop() {
        cond.lock(); stopping = true; cond.broadcast(); cond.unlock()
        done.wait()
    }

    func isStopping() -> Bool { cond.lock(); defer { cond.unlock() }; return stopping }

    func spawn(_ name: String, _ body: @escaping @Sendable () -> Void) {
        done.enter()
        let t = Thread { [done] in body(); done.leave() }
        t.name = name
        t.start()
        threads.append(t)
    }

    /// Every second: VMM processes that exited and VMMs that stopped answering show in the store.
    func watchLoop() {
        guard let store = try? Store(path: config.dbPath) else { return }
        while !isStopping() {
            let busy = Set(((try? store.runningJobs()) ?? []).map(\.target))
            handlers.instances.watch(store: store, busyTargets: busy)
            cond.lock()
            if !stopping { _ = cond.wait(until: Date().addingTimeInterval(1)) }
            cond.unlock()
        }
    }

    func workerLoop(builds: Bool) {
        let store: Store
        do { store = try Store(path: config.dbPath) } catch {
            log.error("worker cannot open the database", ["error": "\(error)"])
            return
        }
        var seen = -1
        while true {
            cond.lock()
            if stopping { cond.unlock(); return }
            seen = generation
            cond.unlock()
            var didWork = false
            do {
                if builds {
                    if let b = try store.claimImageBuild() {
                        handlers.runBuild(b, store: store)
                        didWork = true
                    }
                } else if let job = try store.claimJob() {
                    run(job, store: store)
                    didWork = true
                }
            } catch {
                log.error("queue error", ["error": "\(error)"])
            }
            if didWork { poke(); continue }
            cond.lock()
            while generation == seen && !stopping {
                if !cond.wait(until: Date().addingTimeInterval(config.pollSeconds)) { break }
            }
            cond.unlock()
        }
    }

    func run(_ job: JobRecord, store: Store) {
        let meta = ["job_id": String(job.id), "kind": job.kind.rawValue, "target": job.target]
        log.info("job started", meta)
        let t0 = Date()
        var failure: APIError? = nil
        do {
            try handlers.run(job, store: store, answer: { [job] in
                try? store.answerJob(id: job.id)
                if let w = job.waiter { wake(w) }
            })
        } catch let e as APIError {
            failure = e
        } catch {
            failure = APIError(.internalError, "\(job.kind.rawValue) failed: \(error)")
        }
        do { try store.finishJob(id: job.id, error: failure) } catch {
            log.error("cannot record job result", meta.merging(["error": "\(error)"]) { a, _ in a })
        }
        if let w = job.waiter { wake(w) }
        var m = meta
        m["ms"] = String(Int(Date().timeIntervalSince(t0) * 1000))
        if let failure { m["error"] = failure.description; log.warning("job failed", m) } else { log.info("job done", m) }
    }
}
