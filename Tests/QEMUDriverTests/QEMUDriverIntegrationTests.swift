import Foundation
import Glibc
import Testing
import VMM
@testable import QEMUDriver

/// Real QEMU (TCG, 256 MiB guests). The lifecycle tests boot a halting multiboot stub, so they need
/// only qemu-system-x86_64; the guest tests boot the Debian kernel from HYPEMAN_KERNEL_DIR.
enum QEMUEnv {
    static let driver = QEMUDriver(accel: "tcg", timeouts: QEMUTimeouts(qmpReady: .seconds(20), deviceRemoval: .seconds(60)))
    static let available = driver.isAvailable()
    static let missing = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86): real-QEMU tests skipped"
    static let kernelMissing = "HYPEMAN_KERNEL_DIR is unset or has no current/vmlinux (run scripts/setup-guest-kernel.sh DIR and export HYPEMAN_KERNEL_DIR=DIR): guest-boot test skipped"

    static func measure(_ what: String, _ d: Duration?) {
        guard let d else { return }
        print("[qemu-measure] \(what): \(String(format: "%.3f", d.seconds)) s")
    }

    static func processGone(_ pid: Int32) -> Bool { kill(pid, 0) != 0 && errno == ESRCH }
}

/// One serialized parent, so no two real-QEMU tests share the (2-vCPU) machine at once.
@Suite(.serialized) struct RealQEMUTests {}

extension RealQEMUTests {
@Suite(.enabled(if: QEMUEnv.available, Comment(rawValue: QEMUEnv.missing)))
struct QEMULifecycleTests {
    let driver = QEMUEnv.driver

    @Test func launchRunsInItsOwnSessionAndPausesResumesAndShutsDown() throws {
        let g = try TestGuest("life")
        defer { g.remove() }
        let spec = g.spec(kernel: try g.haltingKernel())
        let vm = try driver.launchVM(spec)
        QEMUEnv.measure("spawn -> QMP ready", vm.timings.spawnToQMP)
        #expect(try vm.state() == .running)
        #expect(QEMUProcess.procStat(vm.pid) != nil)
        // setsid: QEMU leads its own session, so it outlives the Provisioner and its signals.
        let stat = String(decoding: FileManager.default.contents(atPath: "/proc/\(vm.pid)/stat") ?? Data(), as: UTF8.self)
        let afterComm = stat[stat.index(after: stat.lastIndex(of: ")") ?? stat.startIndex)...].split(separator: " ")
        #expect(afterComm.count > 3 && afterComm[3] == Substring(String(vm.pid)), "session id is QEMU's own pid")
        #expect(getsid(vm.pid) == vm.pid)
        let pidFile = String(decoding: FileManager.default.contents(atPath: spec.runDir + "/qemu.pid") ?? Data(), as: UTF8.self)
        #expect(pidFile.trimmingCharacters(in: .whitespacesAndNewlines) == String(vm.pid))

        try vm.pause()
        #expect(try vm.state() == .paused)
        #expect(try vm.runStatus() == "paused")
        try vm.resume()
        #expect(try vm.state() == .running)
        let events = try vm.qmp().pollEvents(for: .milliseconds(50)).map(\.name)
        #expect(events.contains("STOP") && events.contains("RESUME"))

        let began = ContinuousClock.now
        try vm.shutdown(grace: 0.5)  // the stub ignores the power button: quit follows the grace period
        QEMUEnv.measure("shutdown(grace 0.5) ladder", began.duration(to: .now))
        #expect(QEMUEnv.processGone(vm.pid))
        #expect(try vm.state() == .shutdown)
        #expect(!FileManager.default.fileExists(atPath: spec.runDir + "/qmp.sock"))
        #expect(throws: VMMError.self) { try vm.pause() }
    }

    @Test func snapshotThenRestoreIntoAFreshQEMU() throws {
        let g = try TestGuest("snap")
        defer { g.remove() }
        let data = DiskSpec(id: "data", path: try g.disk("data.raw"), readonly: false)
        let spec = g.spec(kernel: try g.haltingKernel(), hotplug: 256 << 20, disks: [data])
        let vm = try driver.launchVM(spec)
        defer { vm.kill() }
        try vm.resizeMemory(to: (256 + 128) << 20)
        #expect(try vm.run("qom-get", ["path": "hm-vmem", "property": "requested-size"]) == .int(128 << 20))
        #expect(throws: VMMError.self) { try vm.resizeMemory(to: 1 << 30) }      // above base + hotplug
        #expect(throws: VMMError.self) { try vm.resizeMemory(to: 128 << 20) }    // below base

        #expect(throws: VMMError.status(409, "snapshot needs a paused VM; QEMU status is running")) {
            try vm.snapshot(to: g.dir + "/snap")
        }
        try vm.pause()
        try vm.snapshot(to: g.dir + "/snap")
        QEMUEnv.measure("snapshot (migrate fd:) of a 256 MiB stub guest", vm.timings.lastSnapshot)
        let size = (try FileManager.default.attributesOfItem(atPath: g.dir + "/snap/memory")[.size] as? Int) ?? 0
        print("[qemu-measure] snapshot memory file (stub guest): \(size) bytes")
        #expect(size > 0)
        #expect(QEMULayout.read(from: g.dir + "/snap/qemu-layout.json") == vm.layout)
        #expect(try vm.runStatus() == "postmigrate")
        #expect(try vm.state() == .paused)
        #expect(!FileManager.default.fileExists(atPath: g.dir + "/snap/memory.partial"))
        // QEMU 7.2 will not migrate twice without running in between; a failed snapshot leaves no file.
        #expect(throws: VMMError.status(409, "snapshot right after a snapshot: resume the VM first (QEMU cannot migrate twice in a row)")) {
            try vm.snapshot(to: g.dir + "/snap2")
        }
        #expect(!FileManager.default.fileExists(atPath: g.dir + "/snap2/memory"))
        // After running again (cont leaves postmigrate) a second snapshot works.
        try vm.resume()
        #expect(try vm.state() == .running)
        try vm.pause()
        try vm.snapshot(to: g.dir + "/snap2")
        #expect(FileManager.default.fileExists(atPath: g.dir + "/snap2/memory"))
        vm.kill()
        #expect(QEMUEnv.processGone(vm.pid))

        let began = ContinuousClock.now
        let restored = try driver.restoreVM(spec, from: g.dir + "/snap")
        defer { restored.kill() }
        QEMUEnv.measure("restore total (spawn + load + cont)", began.duration(to: .now))
        QEMUEnv.measure("restore spawn -> QMP ready", restored.timings.spawnToQMP)
        QEMUEnv.measure("restore load (migrate-incoming fd:)", restored.timings.restoreLoad)
        #expect(restored.pid != vm.pid)
        #expect(try restored.state() == .running)
        // virtio-mem state came with the stream; the disk is attached again.
        #expect(try restored.run("qom-get", ["path": "hm-vmem", "property": "requested-size"]) == .int(128 << 20))
        #expect(try restored.memorySummary().base == 256 << 20)
        let blocks = try restored.run("query-named-block-nodes").arrayValue ?? []
        #expect(blocks.contains { $0["node-name"]?.stringValue == "d-data" })
        try restored.shutdown(grace: 0)
        #expect(QEMUEnv.processGone(restored.pid))
    }

    @Test func restoreRefusesAMissingSnapshotAndCleansUpAFailedLoad() throws {
        let g = try TestGuest("badsnap")
        defer { g.remove() }
        let spec = g.spec(kernel: try g.haltingKernel())
        #expect(throws: VMMError.process("no snapshot at \(g.dir)/none/memory")) { try driver.restoreVM(spec, from: g.dir + "/none") }
        try FileManager.default.createDirectory(atPath: g.dir + "/junk", withIntermediateDirectories: true)
        try Data("not a migration stream".utf8).write(to: URL(fileURLWithPath: g.dir + "/junk/memory"))
        switch Result(catching: { () throws(VMMError) -> QEMUVM in try driver.restoreVM(spec, from: g.dir + "/junk") }) {
        case .success(let vm):
            vm.kill()
            Issue.record("restoring garbage must fail")
        case .failure(.process(let text)):
            print("[qemu-info] restore of garbage failed as expected: \(text)")
            #expect(text.contains("QEMU exited while restoring"))
            #expect(text.contains("migration"), "QEMU's own words are quoted")
        case .failure(let other):
            Issue.record("expected .process, got \(other)")
        }
        #expect(!FileManager.default.fileExists(atPath: spec.runDir + "/qmp.sock"))
        let pidText = String(decoding: FileManager.default.contents(atPath: spec.runDir + "/qemu.pid") ?? Data(), as: UTF8.self)
        if let pid = Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)) { #expect(QEMUEnv.processGone(pid)) }
    }

    @Test func disksHotplugOnFreeRootPortsWithStableIDs() throws {
        let g = try TestGuest("disk")
        defer { g.remove() }
        let root = DiskSpec(id: "rootfs", path: try g.disk("root.raw"), readonly: true)
        let spec = g.spec(kernel: try g.haltingKernel(), disks: [root])
        let driver = QEMUDriver(accel: "tcg", timeouts: QEMUTimeouts(qmpReady: .seconds(20), deviceRemoval: .seconds(2)))
        let vm = try driver.launchVM(spec)
        defer { vm.kill() }

        func node(_ name: String) throws -> QMPJSON? {
            try vm.run("query-named-block-nodes").arrayValue?.first { $0["node-name"]?.stringValue == name }
        }
        #expect(try node("d-rootfs")?["ro"] == .bool(true))

        let vol = DiskSpec(id: "vol-1", path: try g.disk("vol1.raw"), readonly: false)
        try vm.addDisk(vol)
        #expect(try node("d-vol-1")?["ro"] == .bool(false))
        #expect(try node("f-vol-1")?["file"]?.stringValue == vol.path)
        #expect(vm.layout.slots == ["rootfs": 0, "vol-1": 1])
        #expect(QEMULayout.read(from: spec.runDir + "/qemu-layout.json")?.slots == ["rootfs": 0, "vol-1": 1])
        // The device sits behind root port 1.
        let port = try vm.run("qom-get", ["path": "/machine/peripheral/vol-1", "property": "parent_bus"]).stringValue ?? ""
        #expect(port.contains("hm-rp1"), "parent bus \(port)")

        #expect(throws: VMMError.status(409, "disk vol-1 is already attached")) { try vm.addDisk(vol) }
        let ro = DiskSpec(id: "vol-ro", path: try g.disk("volro.raw"), readonly: true)
        try vm.addDisk(ro)
        #expect(try node("d-vol-ro")?["ro"] == .bool(true))
        // A failed add leaves nothing behind.
        let missing = DiskSpec(id: "vol-x", path: g.dir + "/absent.raw", readonly: false)
        #expect(throws: VMMError.self) { try vm.addDisk(missing) }
        #expect(try node("f-vol-x") == nil)
        #expect(vm.layout.slots["vol-x"] == nil)

        #expect(throws: VMMError.status(404, "no disk nope is attached")) { try vm.removeDisk(id: "nope") }
        // The stub has no OS to acknowledge the PCIe attention button: unplug cannot complete.
        #expect(throws: VMMError.timeout("waiting for a QMP event on \(spec.runDir)/qmp.sock")) { try vm.removeDisk(id: "vol-1") }
        #expect(vm.layout.slots["vol-1"] == 1, "still attached after a refused unplug")
    }

    @Test func attachFindsTheLiveVMAfterItsClientIsGone() throws {
        let g = try TestGuest("attach")
        defer { g.remove() }
        let spec = g.spec(kernel: try g.haltingKernel())
        let vm = try driver.launchVM(spec)
        defer { vm.kill() }
        #expect(driver.attachVM(spec, pid: getpid()) == nil, "our own pid is not this VM's QEMU")
        #expect(driver.attachVM(spec, pid: 0) == nil)
        // A second launch on the same run directory must not unlink a live socket.
        #expect(throws: VMMError.self) { try driver.launchVM(spec) }

        try vm.qmp().close()  // as when the Provisioner that held the monitor exits
        guard let again = driver.attachVM(spec, pid: vm.pid) else {
            Issue.record("attach returned nil for a live VM")
            return
        }
        #expect(try again.state() == .running)
        try again.pause()
        #expect(try again.state() == .paused)
        try again.shutdown(grace: 0)
        #expect(QEMUEnv.processGone(vm.pid))
        #expect(driver.attachVM(spec, pid: vm.pid) == nil, "gone")
    }

    @Test func microvmRunsSnapshotsAndRefusesHotplug() throws {
        let g = try TestGuest("micro")
        defer { g.remove() }
        let driver = QEMUDriver(accel: "tcg", machine: .microvm, timeouts: QEMUTimeouts(qmpReady: .seconds(20)))
        let data = DiskSpec(id: "data", path: try g.disk("data.raw"), readonly: true)
        let spec = g.spec(kernel: try g.haltingKernel(), hotplug: 256 << 20, disks: [data])
        let vm = try driver.launchVM(spec)
        defer { vm.kill() }
        #expect(try vm.state() == .running)
        #expect(try vm.memorySummary() == (256 << 20, 0))
        #expect(throws: VMMError.unsupported("memory resize on the microvm machine")) { try vm.resizeMemory(to: 300 << 20) }
        #expect(throws: VMMError.unsupported("disk hot-plug on the microvm machine (virtio-mmio)")) {
            try vm.addDisk(DiskSpec(id: "v", path: data.path, readonly: true))
        }
        try vm.pause()
        try vm.snapshot(to: g.dir + "/snap")
        vm.kill()
        let restored = try driver.restoreVM(spec, from: g.dir + "/snap")
        defer { restored.kill() }
        #expect(try restored.state() == .running)
        #expect(try restored.run("query-named-block-nodes").arrayValue?.contains { $0["node-name"]?.stringValue == "d-data" } == true)
        try restored.shutdown(grace: 0)
        #expect(QEMUEnv.processGone(restored.pid))
    }

    @Test func startupFailuresReportQEMUsWordsAndLeaveNothing() throws {
        let g = try TestGuest("fail")
        defer { g.remove() }
        let spec = g.spec(kernel: g.dir + "/no-such-kernel")
        let result = Result(catching: { () throws(VMMError) -> QEMUVM in try driver.launchVM(spec) })
        switch result {
        case .success(let vm):
            vm.kill()
            Issue.record("launch without a kernel must fail")
        case .failure(.process(let text)):
            #expect(text.contains("no-such-kernel"), "message: \(text)")
        case .failure(let other):
            Issue.record("expected .process, got \(other)")
        }
        #expect(!FileManager.default.fileExists(atPath: spec.runDir + "/qmp.sock"))

        let none = QEMUDriver(binary: "/nonexistent/qemu-system-x86_64")
        #expect(!none.isAvailable())
        #expect(throws: VMMError.self) { try none.launch(spec) }
    }
}

@Suite(.enabled(if: QEMUEnv.available && guestKernel() != nil,
                             Comment(rawValue: QEMUEnv.available ? QEMUEnv.kernelMissing : QEMUEnv.missing)))
struct QEMUGuestTests {
    @Test func linuxGuestResizesHotplugsAndSurvivesSnapshotRestore() throws {
        guard let kernel = guestKernel() else { return }
        let g = try TestGuest("guest")
        defer { g.remove() }
        let driver = QEMUEnv.driver
        let initrd = try g.initramfs(modulesDir: kernel.modules)
        let data = DiskSpec(id: "data", path: try g.disk("data.raw"), readonly: true)
        let spec = g.spec(kernel: kernel.vmlinux, initramfs: initrd, cmdline: "console=ttyS0 panic=-1 quiet",
                          hotplug: 256 << 20, disks: [data])
        let began = Date()
        let vm = try driver.launchVM(spec)
        defer { vm.kill() }
        QEMUEnv.measure("spawn -> QMP ready (kernel guest)", vm.timings.spawnToQMP)
        #expect(g.waitSerial(timeout: 90) { $0.contains("hm-tick 1 ") }, "guest booted: \(g.serial.suffix(600))")
        print("[qemu-measure] launch -> first tick (TCG, Debian kernel): \(String(format: "%.2f", Date().timeIntervalSince(began))) s")
        #expect(g.ticks.last?.disks.contains("vda") == true)

        // virtio-mem: +128 MiB shows up in the guest's MemTotal.
        let memBefore = g.ticks.last?.mem ?? 0
        try vm.resizeMemory(to: (256 + 128) << 20)
        #expect(g.waitSerial(timeout: 60) { _ in (g.ticks.last?.mem ?? 0) >= memBefore + 120 * 1024 },
                "MemTotal grew from \(memBefore) kB: \(g.ticks.suffix(3))")
        #expect(try vm.memorySummary().plugged == 128 << 20)

        // Disk hot-plug and hot-unplug seen by the guest.
        try vm.addDisk(DiskSpec(id: "vol-1", path: try g.disk("vol1.raw"), readonly: false))
        #expect(g.waitSerial(timeout: 60) { _ in g.ticks.last?.disks.contains("vdb") == true }, "vdb appeared: \(g.ticks.suffix(2))")
        let unplug = ContinuousClock.now
        try vm.removeDisk(id: "vol-1")
        QEMUEnv.measure("removeDisk (device_del -> DEVICE_DELETED)", unplug.duration(to: .now))
        #expect(g.waitSerial(timeout: 30) { _ in g.ticks.last.map { !$0.disks.contains("vdb") } == true })
        #expect(vm.layout.slots["vol-1"] == nil)

        // Snapshot, kill, restore: the guest counter continues, it does not reboot.
        try vm.pause()
        let lastTick = g.ticks.last?.n ?? 0
        let memAtSnapshot = g.ticks.last?.mem ?? 0
        try vm.snapshot(to: g.dir + "/snap")
        QEMUEnv.measure("snapshot (migrate fd:) of a 256 MiB + 128 MiB plugged Linux guest", vm.timings.lastSnapshot)
        let size = (try FileManager.default.attributesOfItem(atPath: g.dir + "/snap/memory")[.size] as? Int) ?? 0
        print("[qemu-measure] snapshot memory file (Linux guest): \(size) bytes")
        vm.kill()

        let t0 = ContinuousClock.now
        let restored = try driver.restoreVM(spec, from: g.dir + "/snap")
        defer { restored.kill() }
        QEMUEnv.measure("restore total (spawn + load + cont), Linux guest", t0.duration(to: .now))
        QEMUEnv.measure("restore load (migrate-incoming fd:), Linux guest", restored.timings.restoreLoad)
        #expect(g.waitSerial(timeout: 30) { _ in (g.ticks.last?.n ?? 0) > lastTick }, "ticks continue after \(lastTick)")
        #expect(g.serial.components(separatedBy: "HM-TEST-BOOTED").count == 2, "booted once")
        #expect(g.ticks.last?.mem == memAtSnapshot, "plugged memory is still there")
        #expect(try restored.memorySummary().plugged == 128 << 20)
        try restored.shutdown(grace: 1)
        #expect(QEMUEnv.processGone(restored.pid))
    }
}
}
