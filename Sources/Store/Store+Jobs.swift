import SQLite
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
    public var attempts: Int
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
                         error: err, waiter: r.string("waiter"), attempts: Int(r.int("attempts") ?? 0))
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

    /// Claims the oldest queued job whose target has no running job (work on one target is serial).
    public func claimJob() throws -> JobRecord? {
        try transaction {
            guard let r = try db.queryOne("""
                SELECT * FROM jobs j WHERE j.state = 'queued'
                AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.target = j.target AND r.state = 'running')
                ORDER BY j.id LIMIT 1
                """) else { return nil }
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

    /// Puts a running job back in the queue (reconcile after a crash).
    public func requeueJob(id: Int64) throws {
        try db.run("UPDATE jobs SET state = 'queued', started_at = NULL WHERE id = ?", [id])
    }

    /// Deletes finished jobs older than `keep` newest ones (the queue does not grow forever).
    public func pruneFinishedJobs(keep: Int = 10_000) throws {
        try db.run("""
            DELETE FROM jobs WHERE state IN ('done','failed') AND id < (SELECT COALESCE(MAX(id), 0) - ? FROM jobs)
            """, [keep])
    }
}
