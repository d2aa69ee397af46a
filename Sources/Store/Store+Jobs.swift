import SQLite
#if canImport(Glibc)
import Glibc
#endif
import JSON
import Model

/// Kinds of work the Provisioner does for the edge.
public enum JobKind: String, Sendable, CaseIterable {
    case pull
    case create, start, stop, standby, restore, delete
    case volumeCreate = "volume_create"
    case volumeDelete = "volume_delete"
    case attach, detach
    case imageGC = "image_gc"
}

/// Where a job is.
public enum JobState: String, Sendable { case queued, running, done, failed }

/// A row of the queue.
public struct JobRecord: Sendable {
    public var id: Int64
    public var kind: JobKind
    public var target: String
    public var payload: JSONValue
    public var state: JobState
    /// True once the requester may be answered (a pull answers after resolving, before building).
    public var answered: Bool
    public var error: APIError?
    public var waiter: String?
    /// How often the job was claimed (a job re-queued after a crash counts each start).
    public var attempts: Int
    /// Unix milliseconds before which the job may not be claimed (backoff after an interruption).
    public var notBefore: Int64?
}

/// Unix time in milliseconds, as `not_before` columns hold it.
public func unixMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

extension Store {
    func jobRecord(_ r: Row) -> JobRecord {
        var err: APIError? = nil
        if let c = r.string("error_code") {
            err = APIError(ErrorCode(rawValue: c) ?? .internalError, r.string("error_message") ?? "",
                           status: r.int("error_status").map(Int.init))
        }
        return JobRecord(id: r.int("id") ?? 0, kind: JobKind(rawValue: r.string("kind") ?? "") ?? .create,
                         target: r.string("target") ?? "", payload: Columns.decode(r.string("payload")) ?? .object(JSONObject()),
                         state: JobState(rawValue: r.string("state") ?? "") ?? .failed, answered: r.bool("answered"),
                         error: err, waiter: r.string("waiter"), attempts: Int(r.int("attempts") ?? 0),
                         notBefore: r.int("not_before"))
    }

    /// Appends a job; returns its id.
    @discardableResult
    public func enqueue(_ kind: JobKind, target: String, payload: JSONValue = .object(JSONObject()), waiter: String? = nil) throws -> Int64 {
        try db.run("INSERT INTO jobs(kind, target, payload, waiter, created_at) VALUES(?, ?, ?, ?, ?)",
                   [kind.rawValue, target, Columns.encode(payload), waiter, Timestamp.now()])
        return db.lastInsertRowID
    }

    public func job(id: Int64) throws -> JobRecord? {
        try db.queryOne("SELECT * FROM jobs WHERE id = ?", [id]).map(jobRecord)
    }

    /// True when a queued or running job of one of `kinds` targets `target`.
    public func hasPendingJob(target: String, kinds: [JobKind]? = nil) throws -> Bool {
        let rows = try db.query("SELECT kind FROM jobs WHERE target = ? AND state IN ('queued','running')", [target])
        guard let kinds else { return !rows.isEmpty }
        return rows.contains { r in kinds.contains { $0.rawValue == r.string("kind") } }
    }

    // MARK: provisioner side

    /// Claims the oldest queued job whose target has no running job (work on one target is serial)
    /// and whose backoff (`not_before`) has passed. A target's jobs run in order: one waiting out
    /// its backoff holds back the later jobs of its target.
    public func claimJob(now: Int64 = unixMillis()) throws -> JobRecord? {
        try transaction {
            guard let r = try db.queryOne("""
                SELECT * FROM jobs j WHERE j.state = 'queued'
                AND (j.not_before IS NULL OR j.not_before <= ?)
                AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.target = j.target AND r.state = 'running')
                AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.target = j.target AND e.state = 'queued' AND e.id < j.id)
                ORDER BY j.id LIMIT 1
                """, [now]) else { return nil }
            let id = r.int("id") ?? 0
            try db.run("UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?", [Timestamp.now(), id])
            var j = jobRecord(r)
            j.state = .running
            j.attempts += 1
            return j
        }
    }

    /// Marks the job answerable while it keeps running.
    public func answerJob(id: Int64) throws {
        try db.run("UPDATE jobs SET answered = 1 WHERE id = ?", [id])
    }

    /// Finishes a job: done, or failed with an error the edge will render.
    public func finishJob(id: Int64, error: APIError? = nil) throws {
        try db.run("""
            UPDATE jobs SET state = ?, answered = 1, error_code = ?, error_message = ?, error_status = ?, finished_at = ? WHERE id = ?
            """, [error == nil ? "done" : "failed", error?.code.rawValue, error?.message, error?.status, Timestamp.now(), id])
    }

    /// Jobs left `running` by a crash.
    public func runningJobs() throws -> [JobRecord] {
        try db.query("SELECT * FROM jobs WHERE state = 'running' ORDER BY id").map(jobRecord)
    }

    /// Puts a running job back in the queue (reconcile after a crash), claimable from `notBefore`
    /// (Unix milliseconds; nil = at once).
    public func requeueJob(id: Int64, notBefore: Int64? = nil) throws {
        try db.run("UPDATE jobs SET state = 'queued', started_at = NULL, not_before = ? WHERE id = ?", [notBefore, id])
    }

    /// Ends a job that kept being interrupted (past its attempt cap): failed with `error`, which
    /// its resource shows too: an instance's `state_error`; a volume being deleted is `ready`
    /// again (it still exists, and a DELETE may be retried).
    public func giveUpJob(_ job: JobRecord, error: APIError) throws {
        try transaction {
            try finishJob(id: job.id, error: error)
            switch job.kind {
            case .delete, .create, .start, .stop, .standby, .restore, .attach, .detach:
                try db.run("UPDATE instances SET state_error = ? WHERE id = ?", [error.message, job.target])
            case .volumeDelete:
                try db.run("UPDATE volumes SET status = 'ready' WHERE id = ? AND status = 'deleting'", [job.target])
            case .pull, .imageGC, .volumeCreate:
                break
            }
        }
    }

    /// Image builds left `pulling`/`converting` by a crash (reconcile at start-up): those claimed
    /// `maxAttempts` times or more end `failed` with `error(attempts)`; the others go back to the
    /// queue, claimable after `backoffMillis(attempts)`. Returns (re-queued, failed) digests.
    public func reconcileInterruptedBuilds(maxAttempts: Int, now: Int64 = unixMillis(),
                                           backoffMillis: (Int) -> Int64,
                                           error: (Int) -> String) throws -> (requeued: [String], failed: [String]) {
        try transaction {
            var requeued: [String] = [], failed: [String] = []
            let rows = try db.query("SELECT digest, attempts FROM image_builds WHERE status IN ('pulling','converting') ORDER BY digest")
            for r in rows {
                let digest = r.string("digest") ?? ""
                let attempts = Int(r.int("attempts") ?? 0)
                if attempts >= maxAttempts {
                    try db.run("UPDATE image_builds SET status = 'failed', error = ?, updated_at = ? WHERE digest = ?",
                               [error(attempts), Timestamp.now(), digest])
                    failed.append(digest)
                } else {
                    try db.run("""
                        UPDATE image_builds SET status = 'pending', bytes_done = 0, not_before = ?, updated_at = ? WHERE digest = ?
                        """, [now + backoffMillis(attempts), Timestamp.now(), digest])
                    requeued.append(digest)
                }
            }
            return (requeued, failed)
        }
    }

    /// Attempts and backoff of a build (for tests and logs).
    public func imageBuildAttempts(digest: String) throws -> (attempts: Int, notBefore: Int64?)? {
        try db.queryOne("SELECT attempts, not_before FROM image_builds WHERE digest = ?", [digest]).map {
            (Int($0.int("attempts") ?? 0), $0.int("not_before"))
        }
    }

    /// Paths of staged uploads that queued or running jobs still reference (`payload.archive`).
    public func pendingUploadPaths() throws -> Set<String> {
        let rows = try db.query("SELECT payload FROM jobs WHERE state IN ('queued','running') AND payload LIKE '%archive%'")
        return Set(rows.compactMap { Columns.decode($0.string("payload"))?["archive"]?.stringValue })
    }

    /// Deletes finished jobs older than `keep` newest ones (the queue does not grow forever).
    public func pruneFinishedJobs(keep: Int = 10_000) throws {
        try db.run("""
            DELETE FROM jobs WHERE state IN ('done','failed') AND id < (SELECT COALESCE(MAX(id), 0) - ? FROM jobs)
            """, [keep])
    }
}
