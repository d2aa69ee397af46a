import Foundation
import Testing
@testable import ProvisionerCore
import Model
import JSON
import Store

/// A scratch directory removed when the test ends.
final class Scratch {
    let path: String
    init(_ tag: String) {
        path = NSTemporaryDirectory() + "hm-secprov-\(tag)-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func testConfig(_ dir: String, _ extra: [String: String] = [:]) throws -> ProvisionerConfig {
    try ProvisionerConfig.fromEnvironment(["DATA_DIR": dir, "HYPEMAN_RUN_DIR": dir + "/run", "QEMU_ACCEL": "tcg"]
        .merging(extra) { _, b in b })
}

@Suite struct JobRetryTests {
    @Test func backoffDoublesAndIsCapped() {
        let p = JobRetryPolicy(maxAttempts: 3, baseDelay: 5)
        #expect(p.backoffMillis(afterAttempts: 1) == 5_000)
        #expect(p.backoffMillis(afterAttempts: 2) == 10_000)
        #expect(p.backoffMillis(afterAttempts: 3) == 20_000)
        #expect(p.backoffMillis(afterAttempts: 1000) == 320_000)
        #expect(p.allowsRetry(afterAttempts: 2) && !p.allowsRetry(afterAttempts: 3))
    }

    @Test func configReadsTheLimitsAndRefusesNonsense() throws {
        let scratch = Scratch("cfg"); defer { withExtendedLifetime(scratch) {} }; let dir = scratch.path
        let c = try testConfig(dir, ["JOB_MAX_ATTEMPTS": "5", "JOB_RETRY_BACKOFF_SECONDS": "0.5", "MAX_IMAGE_SIZE": "2GB"])
        #expect(c.jobRetry == JobRetryPolicy(maxAttempts: 5, baseDelay: 0.5))
        #expect(c.maxImageBytes == 2 << 30)
        #expect(c.lockPath == dir + "/provisioner.lock" && c.uploadsDir == dir + "/uploads")
        let d = try testConfig(dir)
        #expect(d.jobMaxAttempts == 3 && d.maxImageBytes == 32 << 30)
        for bad in [["JOB_MAX_ATTEMPTS": "0"], ["MAX_IMAGE_SIZE": "huge"], ["MAX_IMAGE_SIZE": "99999999999999999999"],
                    ["JOB_RETRY_BACKOFF_SECONDS": "-1"], ["JOB_RETRY_BACKOFF_SECONDS": "nan"]] {
            #expect(throws: (any Error).self, "\(bad)") { _ = try testConfig(dir, bad) }
        }
    }

    /// A job that dies with the Provisioner every time: re-queued with backoff (respected), then
    /// failed after JOB_MAX_ATTEMPTS starts, with the error on its resource.
    @Test func crashingJobEndsFailedAfterTheCap() throws {
        let scratch = Scratch("retry"); defer { withExtendedLifetime(scratch) {} }; let dir = scratch.path
        let config = try testConfig(dir, ["JOB_MAX_ATTEMPTS": "3", "JOB_RETRY_BACKOFF_SECONDS": "0.2"])
        let store = try Store(path: config.dbPath)
        try store.insertVolume(id: "v1", name: "v1", sizeGB: 1, maxTotalGB: 0)
        try store.setVolumeReady(id: "v1", sizeGB: 1)
        try store.beginVolumeDelete(id: "v1")
        let id = try store.enqueue(.volumeDelete, target: "v1")
        let log = Log("test")
        var waits: [Double] = []
        for attempt in 1...3 {
            // Claimable only once the backoff has passed.
            let t0 = Date()
            var job: JobRecord? = nil
            while job == nil && Date().timeIntervalSince(t0) < 5 {
                job = try store.claimJob()
                if job == nil { usleep(10_000) }
            }
            waits.append(Date().timeIntervalSince(t0))
            #expect(job?.id == id && job?.attempts == attempt)
            // The Provisioner crashes here (the job stays `running`); the next start reconciles.
            try Reconciler.reconcileQueue(store: store, config: config, log: log)
        }
        #expect(waits[0] < 0.15)
        #expect(waits[1] >= 0.19 && waits[2] >= 0.39, "\(waits)")
        let failed = try #require(try store.job(id: id))
        #expect(failed.state == .failed)
        #expect(failed.error?.message.contains("interrupted 3 times") == true)
        #expect(try store.claimJob() == nil)
        if case .found(let v) = try store.resolveVolume("v1") { #expect(v.status == "ready") } else { Issue.record("volume lost") }
    }
}

@Suite struct ProvisionerLockTests {
    @Test func secondLockIsRefusedNamingTheHolder() throws {
        let scratch = Scratch("lock"); defer { withExtendedLifetime(scratch) {} }; let dir = scratch.path
        let first = try ProvisionerLock(path: dir + "/provisioner.lock")
        do {
            _ = try ProvisionerLock(path: dir + "/provisioner.lock")
            Issue.record("two locks")
        } catch {
            #expect(error == .held(path: dir + "/provisioner.lock", pid: getpid()))
            #expect(error.description.contains("pid \(getpid())"))
        }
        withExtendedLifetime(first) {}
    }

    static var provisionerBinary: String? {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        var dir = (exe as NSString).deletingLastPathComponent
        if dir.hasSuffix(".xctest/Contents/MacOS") || dir.hasSuffix(".xctest") { dir = (dir as NSString).deletingLastPathComponent }
        let p = dir + "/hypeman-provisioner"
        return FileManager.default.isExecutableFile(atPath: p) ? p : nil
    }

    @Test(.enabled(if: provisionerBinary != nil, "needs the hypeman-provisioner binary (swift build)"))
    func secondProvisionerProcessExitsAtOnce() throws {
        let scratch = Scratch("lock2"); defer { withExtendedLifetime(scratch) {} }; let dir = scratch.path
        let held = try ProvisionerLock(path: dir + "/provisioner.lock")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.provisionerBinary!)
        p.environment = ["DATA_DIR": dir, "HYPEMAN_RUN_DIR": dir + "/run", "QEMU_ACCEL": "tcg", "HYPEMAN_NETWORK": "off",
                         "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        let t0 = Date()
        try p.run()
        let output = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let took = Date().timeIntervalSince(t0)
        #expect(p.terminationStatus == 3)
        #expect(took < 5, "took \(took) s")
        let text = String(decoding: output, as: UTF8.self)
        #expect(text.contains("pid \(getpid())"), "\(text)")
        // It touched nothing: no database, no run directory.
        #expect(!FileManager.default.fileExists(atPath: dir + "/hypeman.db"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/run"))
        withExtendedLifetime(held) {}
    }
}

@Suite struct UploadSweeperTests {
    @Test func removesOnlyOldUnreferencedUploads() throws {
        let scratch = Scratch("uploads"); defer { withExtendedLifetime(scratch) {} }; let dir = scratch.path
        let uploads = dir + "/uploads"
        try FileManager.default.createDirectory(atPath: uploads, withIntermediateDirectories: true)
        let store = try Store(path: dir + "/t.db")
        func make(_ name: String, ageSeconds: Double) {
            let p = uploads + "/" + name
            FileManager.default.createFile(atPath: p, contents: Data("x".utf8))
            let t = Date().addingTimeInterval(-ageSeconds)
            try? FileManager.default.setAttributes([.modificationDate: t], ofItemAtPath: p)
        }
        make("old.upload", ageSeconds: 7200)
        make("fresh.upload", ageSeconds: 10)
        make("queued.upload", ageSeconds: 7200)
        make("other.txt", ageSeconds: 7200)
        var payload = JSONObject()
        payload["archive"] = .string(uploads + "/queued.upload")
        _ = try store.enqueue(.volumeCreate, target: "v1", payload: .object(payload))
        let removed = UploadSweeper(dir: uploads, maxAge: 3600).sweep(store: store)
        #expect(removed == ["old.upload"])
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: uploads))
        #expect(left == ["fresh.upload", "queued.upload", "other.txt"])
    }
}

@Suite struct ImageErrorTests {
    @Test func hostDetailNeverReachesTheImageError() throws {
        let ref = try ImageReference.parse("127.0.0.1:5000/a/b:latest")
        let io = OCIImageService.apiError(.io("cannot open /var/lib/hypeman/system/oci-cache/x: Permission denied"), ref: ref, during: "unpacking")
        #expect(!io.message.contains("/var/lib") && !io.message.contains("Permission denied"))
        #expect(io.message.contains(ref.normalized))
        let big = OCIImageService.apiError(.limitExceeded("image layers expand to more than 10 bytes"), ref: ref, during: "unpacking")
        #expect(big.message.contains("too large") && big.message.contains("more than 10 bytes"))
    }
}
