import Testing
import Foundation
@testable import Store
import Model
import JSON

/// A fresh database file per test (real SQLite, WAL).
func tempStore() throws -> (Store, String) {
    let dir = NSTemporaryDirectory() + "store-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let path = dir + "/t.db"
    return (try Store(path: path), path)
}

func readyImage(_ s: Store, name: String = "docker.io/library/alpine:latest", digest: String = "sha256:" + String(repeating: "1", count: 64)) throws {
    try s.linkImage(name: name, repository: "docker.io/library/alpine", digest: digest, sourceRef: name)
    try s.finishImageBuild(digest: digest, diskPath: "/x", sizeBytes: 10, entrypoint: ["/bin/sh"], cmd: nil, env: ["A": "1"],
                           workingDir: nil, platform: "linux/amd64")
}

func instance(_ name: String, network: Bool = true, volumes: [InstanceVolume] = [], vcpus: Int = 2) -> InstanceRecord {
    InstanceRecord(id: CUID2.make(), name: name, image: "alpine", imageDigest: "sha256:" + String(repeating: "1", count: 64),
                   state: .created, size: 1 << 30, hotplugSize: 0, overlaySize: 1 << 30, vcpus: vcpus, env: [:],
                   networkEnabled: network, hypervisor: nil, createdAt: Timestamp.now(), volumes: volumes)
}

@Suite struct StoreTests {
    @Test func preparedStatementsAreFoundByTextWhereverTheTextLives() throws {
        let (s, _) = try tempStore()
        let db = s.db
        // One long query from a static, from a copy built at run time, and a different query
        // built into fresh storage again and again (addresses get reused): each gets its own answer.
        let staticSQL = Store.instanceByIDSQL
        let a = try db.prepare(staticSQL)
        #expect(try db.prepare(staticSQL) === a)
        let copy = String(decoding: Array(staticSQL.utf8), as: UTF8.self)
        #expect(try db.prepare(copy) === a)
        for i in 0..<600 {
            let sql = "SELECT \(i) AS n, '" + String(repeating: "x", count: 40) + "' AS pad"
            let row = try db.queryOne(sql)
            #expect(row?.int("n") == Int64(i))
        }
        #expect(try db.prepare(staticSQL) === a)
        let short = try db.queryOne("SELECT 7 AS n")
        #expect(short?.int("n") == 7)
    }

    @Test func migrationsAreIdempotentAcrossOpens() throws {
        let (_, path) = try tempStore()
        let again = try Store(path: path)
        #expect(try again.db.queryOne("PRAGMA user_version")?.values.first == .int(Int64(Migrations.latest)))
        #expect(try again.db.queryOne("PRAGMA journal_mode")?.values.first == .text("wal"))
    }

    @Test func imageQueueAndPositions() throws {
        let (s, _) = try tempStore()
        let d1 = "sha256:" + String(repeating: "a", count: 64), d2 = "sha256:" + String(repeating: "b", count: 64)
        #expect(try s.linkImage(name: "r/a:1", repository: "r/a", digest: d1, sourceRef: "r/a@" + d1))
        #expect(try s.linkImage(name: "r/b:1", repository: "r/b", digest: d2, sourceRef: "r/b@" + d2))
        #expect(try !s.linkImage(name: "r/a:also", repository: "r/a", digest: d1, sourceRef: "r/a@" + d1))
        #expect(try s.image(named: "r/a:1")?.queuePosition == 1)
        #expect(try s.image(named: "r/b:1")?.queuePosition == 2)
        let claimed = try s.claimImageBuild()
        #expect(claimed?.digest == d1)
        #expect(try s.image(named: "r/a:1")?.queuePosition == nil)
        #expect(try s.image(named: "r/b:1")?.queuePosition == 1)
        try s.failImageBuild(digest: d1, error: "boom")
        #expect(try s.image(named: "r/a:also")?.status == "failed")
        // POST after failed re-queues.
        #expect(try s.linkImage(name: "r/a:1", repository: "r/a", digest: d1, sourceRef: "r/a@" + d1))
        #expect(try s.image(named: "r/a:1")?.status == "pending")
        #expect(try s.image(named: "r/a:1")?.error == nil)
    }

    @Test func instanceResolutionByIdNamePrefix() throws {
        let (s, _) = try tempStore()
        let a = instance("web"), b = instance("web", network: false), c = instance("db")
        try s.insertInstance(a, limits: .init())
        try s.insertInstance(b, limits: .init())
        try s.insertInstance(c, limits: .init())
        if case .found(let r) = try s.resolveInstance(a.id) { #expect(r.id == a.id) } else { Issue.record("by id") }
        if case .found(let r) = try s.resolveInstance("db") { #expect(r.id == c.id) } else { Issue.record("by name") }
        if case .ambiguous = try s.resolveInstance("web") {} else { Issue.record("duplicate names are ambiguous") }
        if case .found(let r) = try s.resolveInstance(String(c.id.prefix(20))) { #expect(r.id == c.id) } else { Issue.record("prefix") }
        if case .notFound = try s.resolveInstance("zzzz-nope") {} else { Issue.record("not found") }
    }

    @Test func instanceReadsCarryEveryColumnAndAttachmentsInDeviceOrder() throws {
        let (s, _) = try tempStore()
        for v in ["va", "vb", "vc"] {
            try s.insertVolume(id: v, name: v, sizeGB: 1, maxTotalGB: 0)
            try s.setVolumeReady(id: v, sizeGB: 1)
        }
        // Device order (position) differs from the attachments' key order (volume id).
        let vols = [InstanceVolume(volumeID: "vc", mountPath: "/c", readonly: true, overlay: true, overlaySize: 1 << 20),
                    InstanceVolume(volumeID: "va", mountPath: "/a", readonly: false, overlay: false, overlaySize: nil),
                    InstanceVolume(volumeID: "vb", mountPath: "/b", readonly: true, overlay: false, overlaySize: nil)]
        var a = instance("a", volumes: vols)
        a.env = ["Z": "1", "A": "x\"y"]
        let b = instance("b"), c = instance("c", volumes: [InstanceVolume(volumeID: "vb", mountPath: "/b", readonly: true, overlay: false, overlaySize: nil)])
        for r in [a, b, c] { try s.insertInstance(r, limits: .init()) }
        try s.db.run("UPDATE instances SET state = 'Unknown', state_error = 'boom', ip = '10.0.0.2', mac = 'm', vmm_pid = 42, has_snapshot = 1, creating = 0, skip_guest_agent = 1, started_at = 's', stopped_at = 't', hypervisor = 'qemu' WHERE id = ?", [a.id])

        let got = try #require(try s.instance(id: a.id))
        #expect(got.volumes == vols)
        #expect(got.env == ["Z": "1", "A": "x\"y"])
        #expect(got.state == .unknown && got.stateError == "boom" && got.ip == "10.0.0.2" && got.mac == "m")
        #expect(got.vmmPID == 42 && got.hasSnapshot && !got.creating && got.skipGuestAgent && got.hypervisor == "qemu")
        #expect(got.startedAt == "s" && got.stoppedAt == "t" && got.createdAt == a.createdAt && got.name == "a")
        #expect(got.size == a.size && got.hotplugSize == a.hotplugSize && got.overlaySize == a.overlaySize && got.vcpus == a.vcpus)
        #expect(got.image == a.image && got.imageDigest == a.imageDigest && got.networkEnabled)

        let all = try s.listInstances()
        #expect(all.map(\.id) == [a.id, b.id, c.id].sorted())
        #expect(all.first { $0.id == a.id }?.volumes == vols)
        #expect(all.first { $0.id == b.id }?.volumes == [])
        #expect(all.first { $0.id == c.id }?.volumes.map(\.volumeID) == ["vb"])
        if case .found(let r) = try s.resolveInstance("a") { #expect(r.volumes == vols) } else { Issue.record("by name") }
        if case .found(let r) = try s.resolveInstance(String(c.id.prefix(22))) { #expect(r.volumes.count == 1) } else { Issue.record("prefix") }
        // A malformed env column reads as no env, as before.
        try s.db.run("UPDATE instances SET env = '{\"A\":\"1\",\"A\":\"2\"}' WHERE id = ?", [b.id])
        #expect(try s.instance(id: b.id)?.env == [:])
    }

    @Test func textColumnsReadAsStored() throws {
        let (s, _) = try tempStore()
        try s.db.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v)")
        let texts = ["", "plain", "é😀中", "a\u{0}b", String(repeating: "long ", count: 2000)]
        for (i, t) in texts.enumerated() { try s.db.run("INSERT INTO t(k, v) VALUES(?, ?)", [i, t]) }
        try s.db.run("INSERT INTO t(k, v) VALUES(100, NULL), (101, 42), (102, x'6869')")
        let st = try s.db.prepare("SELECT v FROM t ORDER BY k")
        var got: [String?] = []
        var viaRow: [String?] = []
        while try st.step() {
            got.append(st.string(0))
            viaRow.append(st.row().string("v"))
            #expect(st.withText(0) { String(decoding: $0, as: UTF8.self) } == st.string(0))
        }
        st.reset()
        #expect(got == texts + [nil, nil, "hi"])
        #expect(viaRow == got)
    }

    @Test func networkedNamesAreUnique() throws {
        let (s, _) = try tempStore()
        try s.insertInstance(instance("x"), limits: .init())
        #expect(throws: APIError.self) { try s.insertInstance(instance("x"), limits: .init()) }
        try s.insertInstance(instance("x", network: false), limits: .init())
        #expect(try s.listInstances().count == 2)
    }

    @Test func aggregateLimits() throws {
        let (s, _) = try tempStore()
        let limits = InstanceLimits(maxTotalVCPUs: 4)
        try s.insertInstance(instance("a", vcpus: 3), limits: limits)
        do { try s.insertInstance(instance("b", vcpus: 2), limits: limits); Issue.record("must exceed") } catch let e as APIError {
            #expect(e.code == .limitExceeded)
        }
        #expect(try s.listInstances().count == 1)
    }

    @Test func volumeAttachRules() throws {
        let (s, _) = try tempStore()
        try s.insertVolume(id: "v1", name: "data", sizeGB: 1, maxTotalGB: 0)
        try s.setVolumeReady(id: "v1", sizeGB: 1)
        let rw = InstanceVolume(volumeID: "v1", mountPath: "/data", readonly: false, overlay: false, overlaySize: nil)
        let ro = InstanceVolume(volumeID: "v1", mountPath: "/data", readonly: true, overlay: false, overlaySize: nil)
        let w = instance("w", volumes: [rw])
        try s.insertInstance(w, limits: .init())
        // A writer excludes everybody, and nothing is written when refused.
        #expect(throws: APIError.self) { try s.insertInstance(instance("r", volumes: [ro]), limits: .init()) }
        #expect(try s.listInstances().count == 1)
        do { try s.beginVolumeDelete(id: "v1"); Issue.record("in use") } catch let e as APIError { #expect(e.code == .conflict) }
        try s.deleteInstance(id: w.id)
        try s.insertInstance(instance("r1", volumes: [ro]), limits: .init())
        try s.insertInstance(instance("r2", volumes: [InstanceVolume(volumeID: "v1", mountPath: "/d", readonly: true, overlay: true, overlaySize: 1 << 20)]), limits: .init())
        #expect(throws: APIError.self) { try s.insertInstance(instance("w2", volumes: [rw]), limits: .init()) }
        #expect(try s.volume(id: "v1")?.attachments.count == 2)
        // Unknown volume → not_found.
        do {
            try s.insertInstance(instance("q", volumes: [InstanceVolume(volumeID: "nope", mountPath: "/d", readonly: false, overlay: false, overlaySize: nil)]), limits: .init())
        } catch let e as APIError { #expect(e.code == .notFound) }
    }

    @Test func volumeStorageLimitAndDuplicates() throws {
        let (s, _) = try tempStore()
        try s.insertVolume(id: "a", name: "a", sizeGB: 5, maxTotalGB: 8)
        do { try s.insertVolume(id: "b", name: "b", sizeGB: 4, maxTotalGB: 8) } catch let e as APIError { #expect(e.code == .limitExceeded) }
        do { try s.insertVolume(id: "a", name: "x", sizeGB: 1, maxTotalGB: 0) } catch let e as APIError { #expect(e.code == .alreadyExists) }
        // Creating volumes are invisible to resolution.
        if case .notFound = try s.resolveVolume("a") {} else { Issue.record("creating volumes are hidden") }
    }

    @Test func jobsOnOneTargetRunSerially() throws {
        let (s, _) = try tempStore()
        let j1 = try s.enqueue(.stop, target: "i1")
        let j2 = try s.enqueue(.start, target: "i1")
        let j3 = try s.enqueue(.stop, target: "i2")
        #expect(try s.claimJob()?.id == j1)
        #expect(try s.claimJob()?.id == j3)   // i1 busy: j2 waits
        #expect(try s.claimJob() == nil)
        try s.finishJob(id: j1)
        #expect(try s.claimJob()?.id == j2)
        try s.finishJob(id: j2, error: APIError(.invalidState, "nope"))
        let done = try s.job(id: j2)
        #expect(done?.state == .failed)
        #expect(done?.answered == true)
        #expect(done?.error?.code == .invalidState)
        #expect(done?.error?.status == 409)
    }

    @Test func concurrentWritersFromManyConnections() throws {
        let (_, path) = try tempStore()
        let group = DispatchGroup()
        let errors = NSLock()
        nonisolated(unsafe) var failures = 0
        for t in 0..<8 {
            group.enter()
            Thread {
                defer { group.leave() }
                do {
                    let s = try Store(path: path)
                    for i in 0..<25 { try s.insertInstance(instance("n\(t)-\(i)"), limits: .init()) }
                } catch { errors.lock(); failures += 1; errors.unlock() }
            }.start()
        }
        group.wait()
        #expect(failures == 0)
        #expect(try Store(path: path).listInstances().count == 200)
    }

    @Test func ingressUniqueness() throws {
        let (s, _) = try tempStore()
        let rec = IngressRecord(id: CUID2.make(), name: "web", rules: .array([]), createdAt: Timestamp.now())
        try s.insertIngress(rec, hosts: [("a.example.com", 80)])
        do { try s.insertIngress(IngressRecord(id: CUID2.make(), name: "web", rules: .array([]), createdAt: ""), hosts: []) } catch let e as APIError {
            #expect(e.code == .alreadyExists)
        }
        do { try s.insertIngress(IngressRecord(id: CUID2.make(), name: "web2", rules: .array([]), createdAt: ""), hosts: [("a.example.com", 80)]) } catch let e as APIError {
            #expect(e.code == .hostnameInUse)
        }
        try s.deleteIngress(id: rec.id)
        try s.insertIngress(IngressRecord(id: CUID2.make(), name: "web2", rules: .array([]), createdAt: ""), hosts: [("a.example.com", 80)])
    }
}
