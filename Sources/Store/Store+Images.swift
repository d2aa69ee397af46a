import SQLite
import JSON
import Model

/// An image name (tag or digest reference) joined with its build.
public struct ImageRecord: Sendable {
    public var name: String
    public var digest: String
    public var repository: String
    public var status: String
    public var error: String?
    public var queuePosition: Int?
    public var sizeBytes: Int64?
    public var bytesDone: Int64
    public var bytesTotal: Int64
    public var entrypoint: [String]?
    public var cmd: [String]?
    public var env: [String: String]
    public var workingDir: String?
    public var platform: String?
    public var diskPath: String?
    public var createdAt: String
}

/// A build of one digest: the unit the build queue works on.
public struct ImageBuildRecord: Sendable {
    public var digest: String
    public var repository: String
    public var sourceRef: String
    public var status: String
    public var error: String?
    public var diskPath: String?
}

extension Store {
    static let imageSelect = """
        SELECT i.name, i.digest, i.created_at, b.repository, b.status, b.error, b.size_bytes, b.bytes_done, b.bytes_total,
               b.entrypoint, b.cmd, b.env, b.working_dir, b.platform, b.disk_path,
               CASE WHEN b.status = 'pending'
                    THEN (SELECT COUNT(*) FROM image_builds q WHERE q.status = 'pending' AND q.queue_seq <= b.queue_seq)
                    ELSE NULL END AS queue_position
        FROM images i JOIN image_builds b ON b.digest = i.digest
        """

    static func imageRecord(_ r: Row) -> ImageRecord {
        ImageRecord(
            name: r.string("name") ?? "", digest: r.string("digest") ?? "", repository: r.string("repository") ?? "",
            status: r.string("status") ?? "pending", error: r.string("error"),
            queuePosition: r.int("queue_position").map(Int.init),
            sizeBytes: r.int("size_bytes"), bytesDone: r.int("bytes_done") ?? 0, bytesTotal: r.int("bytes_total") ?? 0,
            entrypoint: Columns.stringArray(r.string("entrypoint")), cmd: Columns.stringArray(r.string("cmd")),
            env: Columns.stringMap(r.string("env")), workingDir: r.string("working_dir"), platform: r.string("platform"),
            diskPath: r.string("disk_path"), createdAt: r.string("created_at") ?? "")
    }

    /// Every image name with its build, in name order.
    public func listImages() throws -> [ImageRecord] {
        try db.query(Self.imageSelect + " ORDER BY i.name").map(Self.imageRecord)
    }

    /// The image stored under a normalized name (`repo:tag` or `repo@digest`).
    public func image(named name: String) throws -> ImageRecord? {
        try db.queryOne(Self.imageSelect + " WHERE i.name = ?", [name]).map(Self.imageRecord)
    }

    /// Finds an image for a parsed reference: by exact name, or for a digest reference by any
    /// name of that repository pointing at that digest.
    public func image(for ref: ImageReference) throws -> ImageRecord? {
        if let r = try image(named: ref.normalized) { return r }
        if let d = ref.digest {
            return try db.queryOne(Self.imageSelect + " WHERE i.digest = ? AND b.repository = ? ORDER BY i.name LIMIT 1",
                                   [d, ref.repository]).map(Self.imageRecord)
        }
        return nil
    }

    /// Removes a name. Returns false when it did not exist.
    @discardableResult
    public func deleteImageName(_ name: String) throws -> Bool {
        try db.run("DELETE FROM images WHERE name = ?", [name]) > 0
    }

    // MARK: provisioner side

    /// Points `name` at `digest`, creating the build row (pending, queued last) if it is new, and
    /// re-queueing a failed build (POST after `failed` retries). Returns true when a build was queued.
    @discardableResult
    public func linkImage(name: String, repository: String, digest: String, sourceRef: String) throws -> Bool {
        try transaction {
            let now = Timestamp.now()
            var queued = false
            let existing = try db.queryOne("SELECT status FROM image_builds WHERE digest = ?", [digest])?.string("status")
            if existing == nil {
                try db.run("""
                    INSERT INTO image_builds(digest, repository, source_ref, status, queue_seq, created_at, updated_at)
                    VALUES(?, ?, ?, 'pending', (SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM image_builds), ?, ?)
                    """, [digest, repository, sourceRef, now, now])
                queued = true
            } else if existing == "failed" {
                try db.run("""
                    UPDATE image_builds SET status = 'pending', error = NULL, bytes_done = 0, bytes_total = 0, source_ref = ?,
                        attempts = 0, not_before = NULL,
                        queue_seq = (SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM image_builds), updated_at = ? WHERE digest = ?
                    """, [sourceRef, now, digest])
                queued = true
            }
            try db.run("""
                INSERT INTO images(name, digest, created_at) VALUES(?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET digest = excluded.digest
                """, [name, digest, now])
            return queued
        }
    }

    /// Claims the oldest pending build whose backoff has passed (status → pulling, one more
    /// attempt), or nil.
    public func claimImageBuild(now: Int64 = unixMillis()) throws -> ImageBuildRecord? {
        try transaction {
            guard let r = try db.queryOne("""
                SELECT digest, repository, source_ref, status, error, disk_path FROM image_builds
                WHERE status = 'pending' AND (not_before IS NULL OR not_before <= ?) ORDER BY queue_seq LIMIT 1
                """, [now]) else { return nil }
            try db.run("UPDATE image_builds SET status = 'pulling', attempts = attempts + 1, updated_at = ? WHERE digest = ?",
                       [Timestamp.now(), r.string("digest") ?? ""])
            return ImageBuildRecord(digest: r.string("digest") ?? "", repository: r.string("repository") ?? "",
                                    sourceRef: r.string("source_ref") ?? "", status: "pulling", error: nil, diskPath: nil)
        }
    }

    public func updateImageBuildProgress(digest: String, status: String, bytesDone: Int64, bytesTotal: Int64) throws {
        try db.run("UPDATE image_builds SET status = ?, bytes_done = ?, bytes_total = ?, updated_at = ? WHERE digest = ?",
                   [status, bytesDone, bytesTotal, Timestamp.now(), digest])
    }

    public func finishImageBuild(digest: String, diskPath: String, sizeBytes: Int64, entrypoint: [String]?, cmd: [String]?,
                                 env: [String: String], workingDir: String?, platform: String) throws {
        try db.run("""
            UPDATE image_builds SET status = 'ready', error = NULL, disk_path = ?, size_bytes = ?, entrypoint = ?, cmd = ?,
                env = ?, working_dir = ?, platform = ?, bytes_done = bytes_total, updated_at = ? WHERE digest = ?
            """, [diskPath, sizeBytes, Columns.encode(entrypoint), Columns.encode(cmd), Columns.encode(env), workingDir,
                  platform, Timestamp.now(), digest])
    }

    public func failImageBuild(digest: String, error: String) throws {
        try db.run("UPDATE image_builds SET status = 'failed', error = ?, updated_at = ? WHERE digest = ?",
                   [error, Timestamp.now(), digest])
    }

    /// Builds interrupted by a crash go back to the queue (reconcile at start-up).
    @discardableResult
    public func requeueInterruptedBuilds() throws -> Int {
        try db.run("UPDATE image_builds SET status = 'pending', bytes_done = 0, updated_at = ? WHERE status IN ('pulling','converting')",
                   [Timestamp.now()])
    }

    /// The build for a digest.
    public func imageBuild(digest: String) throws -> ImageBuildRecord? {
        try db.queryOne("SELECT digest, repository, source_ref, status, error, disk_path FROM image_builds WHERE digest = ?", [digest])
            .map { r in
                ImageBuildRecord(digest: r.string("digest") ?? "", repository: r.string("repository") ?? "",
                                 sourceRef: r.string("source_ref") ?? "", status: r.string("status") ?? "",
                                 error: r.string("error"), diskPath: r.string("disk_path"))
            }
    }

    /// Digests still needed: named by an image or used by an instance.
    public func digestsInUse() throws -> Set<String> {
        let rows = try db.query("SELECT digest AS d FROM images UNION SELECT image_digest AS d FROM instances")
        return Set(rows.compactMap { $0.string("d") })
    }

    /// Drops build rows that nothing references any more; returns their digests.
    public func deleteUnusedBuilds() throws -> [String] {
        try transaction {
            let rows = try db.query("""
                SELECT digest FROM image_builds WHERE status IN ('ready','failed')
                AND digest NOT IN (SELECT digest FROM images) AND digest NOT IN (SELECT image_digest FROM instances)
                """)
            let digests = rows.compactMap { $0.string("digest") }
            for d in digests { try db.run("DELETE FROM image_builds WHERE digest = ?", [d]) }
            return digests
        }
    }
}

/// What an instance needs from its image to boot.
public struct ImageRuntimeConfig: Sendable {
    public var diskPath: String
    public var entrypoint: [String]
    public var cmd: [String]
    public var env: [String: String]
    public var workingDir: String?
}

extension Store {
    /// The boot config of a ready build, or nil when the digest is not ready.
    public func imageRuntimeConfig(digest: String) throws -> ImageRuntimeConfig? {
        guard let r = try db.queryOne("""
            SELECT disk_path, entrypoint, cmd, env, working_dir FROM image_builds WHERE digest = ? AND status = 'ready'
            """, [digest]), let disk = r.string("disk_path") else { return nil }
        return ImageRuntimeConfig(diskPath: disk, entrypoint: Columns.stringArray(r.string("entrypoint")) ?? [],
                                  cmd: Columns.stringArray(r.string("cmd")) ?? [], env: Columns.stringMap(r.string("env")),
                                  workingDir: r.string("working_dir"))
    }
}
