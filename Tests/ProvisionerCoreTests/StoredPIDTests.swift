import Foundation
import Testing
@testable import ProvisionerCore
import Model
import Store
import VMM

/// A process started for a test (argv as given) with posix_spawn, killed and reaped when the test
/// ends. (Not Foundation's Process: the code under test reaps its kills with waitpid, and
/// Process would then wait forever for an exit it never sees.)
final class TestProcess {
    let pid: Int32
    private var reaped = false

    init(_ argv: [String]) throws {
        var pid: pid_t = 0
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        // Its own process group (so `stop` also ends what a shell started) and no inherited
        // stdout/stderr (a leftover child holding swift-test's pipe would stall the whole run).
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let rc = posix_spawn(&pid, argv[0], &actions, &attr, &cArgs, environ)
        guard rc == 0 else { throw VMMError.process("posix_spawn \(argv[0]): \(rc)") }
        self.pid = pid
        // Until exec has happened /proc shows the parent's command line.
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, ProcFacts.arguments(pid)?.first != argv[0] { usleep(5_000) }
    }

    /// True while the process exists and has not exited (a zombie has).
    var running: Bool {
        guard kill(pid, 0) == 0, let st = ProcFacts.stat(pid) else { return false }
        return st.state != "Z" && st.state != "X"
    }

    /// True once the process is gone (reaped by the code under test) or has exited.
    func waitGone(timeout: Double = 5) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while running { if Date() > deadline { return false }; usleep(10_000) }
        return true
    }

    deinit { stop() }

    func stop() {
        guard !reaped else { return }
        kill(-pid, SIGKILL)   // the group: a shell's children too
        if kill(pid, SIGKILL) == 0 || errno != ESRCH {
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }
        reaped = true
    }
}

/// An InstanceManager over a fresh data directory and database, with no hypervisor.
struct ManagerBox {
    let dir: String
    let store: Store
    let manager: InstanceManager

    init() throws {
        dir = NSTemporaryDirectory() + "hm-pid-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/guests", withIntermediateDirectories: true)
        let config = try ProvisionerConfig.fromEnvironment(["DATA_DIR": dir, "HYPEMAN_RUN_DIR": dir + "/run", "QEMU_ACCEL": "tcg"])
        store = try Store(path: config.dbPath)
        manager = InstanceManager(config: config, drivers: DriverTable(drivers: []),
                                  assets: GuestAssets(kernelDir: dir + "/none", outDir: dir + "/initramfs", agentBinary: nil),
                                  network: GuestNetwork(environment: ["HYPEMAN_NETWORK": "off"], keepTAPs: []),
                                  agents: AgentHub { _ in })
    }

    /// Inserts an instance row (and its directory) in `state` with `vmm_pid` = `pid`.
    @discardableResult
    func instance(_ id: String, state: InstanceState = .running, pid: Int32? = nil) throws -> InstanceRecord {
        let rec = InstanceRecord(id: id, name: "n-\(id)", image: "img", imageDigest: "sha256:x", state: state, size: 256 << 20,
                                 hotplugSize: 0, overlaySize: 1 << 30, vcpus: 1, env: [:], networkEnabled: false,
                                 hypervisor: "qemu", createdAt: "2026-01-01T00:00:00.000000Z", volumes: [])
        try store.insertInstance(rec, limits: .init())
        try store.db.run("UPDATE instances SET creating = 0, state = ?, vmm_pid = ? WHERE id = ?",
                         [state.rawValue, pid.map { Int64($0) }, id])
        try FileManager.default.createDirectory(atPath: manager.dir(id) + "/logs", withIntermediateDirectories: true)
        return try #require(try store.instance(id: id))
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: dir) }
}

/// The refusal reason of a check, nil when it passed.
func why(_ r: Result<VMMProcessHandle, VMMProcessMismatch>) -> VMMProcessMismatch? {
    if case .failure(let w) = r { return w }
    return nil
}

@Suite struct StoredPIDTests {
    @Test func anUnrelatedProcessIsNeverTakenForTheVMM() throws {
        let box = try ManagerBox()
        defer { box.cleanup() }
        let sleeper = try TestProcess(["/bin/sleep", "300"])
        defer { sleeper.stop() }
        let dir = box.manager.dir("inst1")
        guard case .failure(.markerMissing(let arg0)) = InstanceManager.verifyVMM(dir: dir, pid: Int(sleeper.pid)) else {
            Issue.record("sleep was accepted as the VMM"); return
        }
        #expect(arg0 == "/bin/sleep")
        #expect(why(InstanceManager.verifyVMM(dir: dir, pid: Int(getpid()))) == .gone, "our own pid is never a VMM")
        #expect(why(InstanceManager.verifyVMM(dir: dir, pid: 0)) == (.gone))
    }

    @Test func aProcessNamingTheControlSocketIsProvenAndTheRecordMustMatch() throws {
        let box = try ManagerBox()
        defer { box.cleanup() }
        let dir = box.manager.dir("inst2")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A stand-in "VMM": a shell whose argv carries the QMP socket path, as QEMU's does.
        let vmm = try TestProcess(["/bin/sh", "-c", "sleep 300; :", "unix:\(dir)/qmp.sock,server=on,wait=off"])
        defer { vmm.stop() }
        guard case .success(let h) = InstanceManager.verifyVMM(dir: dir, pid: Int(vmm.pid)) else {
            Issue.record("the VMM's marker was not recognised"); return
        }
        #expect(h.usesPidfd, "the kernel here has pidfd_open (Linux >= 5.3)")
        // Another instance's directory does not own it, even sharing a prefix.
        #expect(why(InstanceManager.verifyVMM(dir: dir + "x", pid: Int(vmm.pid))) != nil)
        // The spawn record decides: same process passes; another start time, boot or pid does not.
        let rec = try #require(VMMProcessRecord.capture(pid: vmm.pid))
        rec.write(runDir: dir)
        #expect((try? InstanceManager.verifyVMM(dir: dir, pid: Int(vmm.pid)).get()) != nil)
        var other = rec
        other.startTime += 1
        other.write(runDir: dir)
        #expect(why(InstanceManager.verifyVMM(dir: dir, pid: Int(vmm.pid))) == (.startTimeDiffers(recorded: rec.startTime + 1, actual: rec.startTime)))
        other = rec
        other.bootID = "00000000-0000-0000-0000-000000000000"
        other.write(runDir: dir)
        #expect(why(InstanceManager.verifyVMM(dir: dir, pid: Int(vmm.pid))) == (.otherBoot))
        other = rec
        other.pid = rec.pid + 1
        other.write(runDir: dir)
        #expect(why(InstanceManager.verifyVMM(dir: dir, pid: Int(vmm.pid))) == (.recordedForOtherPID(rec.pid + 1)))
        #expect(vmm.running, "checks never signal")
    }

    @Test func stopDeleteAndReconcileLeaveAnUnrelatedProcessAlone() throws {
        let box = try ManagerBox()
        defer { box.cleanup() }
        let sleeper = try TestProcess(["/bin/sleep", "300"])
        defer { sleeper.stop() }
        // stop: the instance ends Stopped, the stranger lives.
        var a = try box.instance("inststop", pid: sleeper.pid)
        try box.manager.stop(&a, store: box.store)
        #expect(try box.store.instance(id: "inststop")?.state == .stopped)
        #expect(try box.store.instance(id: "inststop")?.vmmPID == nil)
        #expect(sleeper.running)
        // reconcile at start: Stopped, pid cleared, stranger alive (it was alive, so it used to become Unknown).
        try box.instance("instrec", pid: sleeper.pid)
        try box.manager.reconcile(store: box.store)
        let r = try #require(try box.store.instance(id: "instrec"))
        #expect(r.state == .stopped && r.vmmPID == nil && r.stateError == nil)
        #expect(sleeper.running)
        // watch: the same.
        try box.instance("instwatch", pid: sleeper.pid)
        box.manager.watch(store: box.store)
        #expect(try box.store.instance(id: "instwatch")?.state == .stopped)
        #expect(sleeper.running)
        // delete: the row and directory go, the stranger stays.
        let d = try box.instance("instdel", pid: sleeper.pid)
        try box.manager.delete(d, store: box.store)
        #expect(try box.store.instance(id: "instdel") == nil)
        #expect(!FileManager.default.fileExists(atPath: box.manager.dir("instdel")))
        #expect(sleeper.running)
        // The refusal is logged in the instance's own log.
        let log = try String(contentsOfFile: box.dir + "/guests/inststop/logs/hypeman.log", encoding: .utf8)
        #expect(log.contains("not this instance's VMM"))
    }

    @Test func theInstancesOwnVMMIsKilledByStopAndReconcileRemovesOrphans() throws {
        let box = try ManagerBox()
        defer { box.cleanup() }
        let dir = box.manager.dir("instown")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let vmm = try TestProcess(["/bin/sh", "-c", "sleep 300; :", "--api-socket", "\(dir)/ch.sock"])
        defer { vmm.stop() }
        VMMProcessRecord.capture(pid: vmm.pid)?.write(runDir: dir)
        var a = try box.instance("instown", pid: vmm.pid)
        try box.manager.stop(&a, store: box.store)
        #expect(vmm.waitGone(), "stop killed the proven VMM")
        // An orphan VMM of a directory no instance owns goes at reconcile; a stranger does not.
        let orphanDir = box.dir + "/guests/orphan1"
        try FileManager.default.createDirectory(atPath: orphanDir, withIntermediateDirectories: true)
        let orphan = try TestProcess(["/bin/sh", "-c", "sleep 300; :", "unix:\(orphanDir)/qmp.sock,server=on,wait=off"])
        defer { orphan.stop() }
        let reader = try TestProcess(["/bin/sh", "-c", "sleep 300; :", "\(orphanDir)/logs/app.log"])   // e.g. someone's `tail -f`
        defer { reader.stop() }
        try box.manager.reconcile(store: box.store)
        #expect(orphan.waitGone(), "reconcile killed the orphan VMM")
        #expect(reader.running, "a process that merely names a file in the directory is not a VMM")
        #expect(!FileManager.default.fileExists(atPath: orphanDir))
    }
}

@Suite struct UniqueVsockCIDTests {
    @Test func idsSharingTheirFirst8CharactersGetDistinctCIDs() throws {
        let box = try ManagerBox()
        defer { box.cleanup() }
        let ids = ["abcdefgh0000000000000001", "abcdefgh0000000000000002", "abcdefgh1111111111111111"]
        #expect(Set(ids.map(InstanceManager.legacyVsockCID)).count == 1, "the old hash collides for these ids")
        var cids: [UInt32] = []
        for id in ids {
            let inst = try box.instance(id, state: .stopped)
            try box.manager.assignVsockCID(inst, store: box.store)
            cids.append(box.manager.vsockCID(id))
        }
        #expect(Set(cids).count == ids.count)
        #expect(cids.allSatisfy { $0 >= 3 && $0 < UInt32.max })
        // A deleted instance's CID may be reused, never a live one's; a restart keeps each CID.
        try box.store.deleteInstance(id: ids[2])
        let late = try box.instance("zzzz0000000000000000000001", state: .stopped)
        try box.manager.assignVsockCID(late, store: box.store)
        let lateCID = box.manager.vsockCID(late.id)
        #expect(!cids[0...1].contains(lateCID))
        let inst0 = try #require(try box.store.instance(id: ids[0]))
        try box.manager.assignVsockCID(inst0, store: box.store)
        #expect(box.manager.vsockCID(ids[0]) == cids[0], "a fresh launch of the same row gets the same CID")
        // Restore and adopt read the recorded CID (the one in the snapshot), not a recomputed one.
        try "77\n".write(toFile: box.manager.dir(ids[1]) + "/vsock-cid", atomically: true, encoding: .utf8)
        #expect(box.manager.vsockCID(ids[1]) == 77)
    }

    @Test func rowidsMapIntoTheUsableRange() {
        #expect(InstanceManager.vsockCID(rowid: 1) == 4)
        #expect(InstanceManager.vsockCID(rowid: Int64(UInt32.max) - 4) == UInt32.max - 1)
        #expect(InstanceManager.vsockCID(rowid: Int64(UInt32.max) - 3) == nil, "2^32-1 is VMADDR_CID_ANY")
        #expect(InstanceManager.vsockCID(rowid: -1) == nil)
    }
}
