import Testing
import Foundation
@testable import Store
import Model
import JSON

/// Backoff and the attempt cap in the queue (migration 3: `not_before`, build attempts).
@Suite struct JobRetryStoreTests {
    @Test func migrationAddsTheRetryColumns() throws {
        let (s, _) = try tempStore()
        let jobCols = try s.db.query("PRAGMA table_info(jobs)").compactMap { $0.string("name") }
        let buildCols = try s.db.query("PRAGMA table_info(image_builds)").compactMap { $0.string("name") }
        #expect(jobCols.contains("not_before"))
        #expect(buildCols.contains("attempts") && buildCols.contains("not_before"))
        #expect(Migrations.latest == 3)
    }

    @Test func claimCountsAttemptsAndRespectsNotBefore() throws {
        let (s, _) = try tempStore()
        let j = try s.enqueue(.delete, target: "i1")
        let later = try s.enqueue(.stop, target: "i1")
        let other = try s.enqueue(.stop, target: "i2")
        let now = unixMillis()
        #expect(try s.claimJob(now: now)?.attempts == 1)
        try s.requeueJob(id: j, notBefore: now + 10_000)
        #expect(try s.job(id: j)?.notBefore == now + 10_000)
        // During the backoff neither it nor the later job of its target may run; other targets may.
        #expect(try s.claimJob(now: now + 9_999)?.id == other)
        #expect(try s.claimJob(now: now + 9_999) == nil)
        let again = try s.claimJob(now: now + 10_000)
        #expect(again?.id == j && again?.attempts == 2)
        try s.finishJob(id: j)
        #expect(try s.claimJob(now: now + 10_000)?.id == later)
    }

    @Test func givingUpMarksTheResource() throws {
        let (s, _) = try tempStore()
        try readyImage(s)
        let inst = instance("doomed")
        try s.insertInstance(inst, limits: .init())
        let del = try s.enqueue(.delete, target: inst.id)
        let job = try #require(try s.claimJob())
        #expect(job.id == del)
        try s.giveUpJob(job, error: APIError(.internalError, "delete was interrupted 3 times"))
        #expect(try s.job(id: del)?.state == .failed)
        #expect(try s.instance(id: inst.id)?.stateError == "delete was interrupted 3 times")

        try s.insertVolume(id: "v1", name: "v1", sizeGB: 1, maxTotalGB: 0)
        try s.setVolumeReady(id: "v1", sizeGB: 1)
        try s.beginVolumeDelete(id: "v1")
        if case .notFound = try s.resolveVolume("v1") {} else { Issue.record("a deleting volume is hidden") }
        _ = try s.enqueue(.volumeDelete, target: "v1")
        try s.giveUpJob(try #require(try s.claimJob()), error: APIError(.internalError, "gave up"))
        // Still there, visible again, deletable again.
        if case .found(let v) = try s.resolveVolume("v1") { #expect(v.status == "ready") } else { Issue.record("volume lost") }
    }

    @Test func interruptedBuildsBackOffThenFail() throws {
        let (s, _) = try tempStore()
        let digest = "sha256:" + String(repeating: "2", count: 64)
        try s.linkImage(name: "r/x:1", repository: "r/x", digest: digest, sourceRef: "r/x@" + digest)
        var now = unixMillis()
        for attempt in 1...3 {
            let b = try #require(try s.claimImageBuild(now: now), "attempt \(attempt)")
            #expect(b.digest == digest)
            #expect(try s.imageBuildAttempts(digest: digest)?.attempts == attempt)
            // The Provisioner dies here; the next one reconciles.
            let r = try s.reconcileInterruptedBuilds(maxAttempts: 3, now: now, backoffMillis: { Int64($0) * 1000 },
                                                     error: { "interrupted \($0) times" })
            if attempt < 3 {
                #expect(r.requeued == [digest] && r.failed.isEmpty)
                #expect(try s.claimImageBuild(now: now + Int64(attempt) * 1000 - 1) == nil)   // backoff respected
                now += Int64(attempt) * 1000
            } else {
                #expect(r.failed == [digest] && r.requeued.isEmpty)
            }
        }
        let img = try #require(try s.image(named: "r/x:1"))
        #expect(img.status == "failed" && img.error == "interrupted 3 times")
        #expect(try s.claimImageBuild(now: now + 1_000_000) == nil)
        // POST /images again starts afresh.
        #expect(try s.linkImage(name: "r/x:1", repository: "r/x", digest: digest, sourceRef: "r/x@" + digest))
        #expect(try s.imageBuildAttempts(digest: digest)?.attempts == 0)
        #expect(try s.claimImageBuild(now: now)?.digest == digest)
    }

    @Test func pendingUploadsAreThoseOfQueuedOrRunningJobs() throws {
        let (s, _) = try tempStore()
        var p = JSONObject(); p["archive"] = .string("/d/uploads/a.upload"); p["size_gb"] = .int(1)
        _ = try s.enqueue(.volumeCreate, target: "v1", payload: .object(p))
        var q = JSONObject(); q["archive"] = .string("/d/uploads/b.upload")
        let done = try s.enqueue(.volumeCreate, target: "v2", payload: .object(q))
        try s.finishJob(id: done)
        #expect(try s.pendingUploadPaths() == ["/d/uploads/a.upload"])
    }
}
