import Foundation
import Testing
@testable import CloudHypervisorDriver
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// The driver against tests/ch_standin (CH's v48 HTTP behaviour, requests checked against the
/// upstream OpenAPI document). Serialized: each test starts Python VMMs and the machine has 2 cores.
@Suite(.serialized, .enabled(if: StandIn.available, "needs python3 with PyYAML and jsonschema (the CH stand-in)"))
struct DriverStandInTests {
    @Test func launchBootsToRunningWithTheMappedConfig() throws {
        let box = try Sandbox()
        let vm = try box.launch(box.driver())
        defer { vm.kill() }
        let log = box.requests()
        #expect(log.map { "\($0.method ?? "") \($0.endpoint)" } == ["GET vmm.ping", "PUT vm.create", "PUT vm.boot", "PUT vm.resize"])
        #expect(try vm.state() == .running)
        #expect(box.exists(box.apiSocket) && box.exists(box.vsockSocket))
        let created = try #require(log.first { $0.endpoint == "vm.create" }?.body)
        let sent = try JSONDecoder().decode(CloudHypervisor.VmConfig.self, from: Data(created.utf8))
        #expect(sent == CHConfig.vmConfig(for: box.spec, vmmMajorVersion: 48))
        #expect(log.first { $0.endpoint == "vm.resize" }?.json?["desired_ram"] as? Int == (512 << 20) + (1 << 30))

        let info = try vm.client.info()
        #expect(info.memoryActualSize == (512 << 20) + (1 << 30))
        #expect(info.config.serial == CloudHypervisor.ConsoleConfig(mode: "File", file: box.spec.serialLogPath))
        let nodes = Set((info.deviceTree ?? [:]).keys)
        #expect(nodes.isSuperset(of: ["rootfs", "overlay", "config"]))
        #expect(box.read("app.log").contains("guest booted"))
        expectWireDiscipline(box.requests())
    }

    @Test func secondPauseFailsWithStatusAndBody() throws {
        let box = try Sandbox()
        let vm = try box.launch(box.driver())
        defer { vm.kill() }
        try vm.pause()
        #expect(try vm.state() == .paused)
        let second = statusOf(vmmError { () throws(VMMError) in try vm.pause() })
        #expect(second?.0 == 500)
        let chain = try #require(try JSONSerialization.jsonObject(with: Data((second?.1 ?? "").utf8)) as? [String])
        #expect(chain.first == "Error from API" && chain.contains("The VM could not be paused"))
        #expect(chain.last?.contains("InvalidStateTransition(Paused, Paused)") == true)
        try vm.resume()
        #expect(try vm.state() == .running)
        #expect(statusOf(vmmError { () throws(VMMError) in try vm.resume() })?.0 == 500)
        let log = box.requests()
        #expect(log.filter { $0.endpoint == "vm.pause" }.map { $0.status } == [204, 500])
        expectWireDiscipline(log)
    }

    @Test func snapshotNeedsAPausedVMAndWritesThreeFiles() throws {
        let box = try Sandbox()
        let vm = try box.launch(box.driver())
        defer { vm.kill() }
        let dir = box.dir + "/snapshots/snapshot-latest"
        let running = statusOf(vmmError { () throws(VMMError) in try vm.snapshot(to: dir) })
        #expect(running?.0 == 500 && running?.1.contains("Trying to snapshot while VM is running") == true)

        try vm.pause()
        try vm.snapshot(to: dir)
        for name in ["config.json", "state.json", "memory-ranges"] {
            #expect(FileManager.default.fileExists(atPath: dir + "/" + name), "\(name) missing")
        }
        let again = statusOf(vmmError { () throws(VMMError) in try vm.snapshot(to: dir) })
        #expect(again?.0 == 500 && again?.1.contains("File exists") == true)
        #expect(try vm.state() == .paused)
        try vm.resume()
        #expect(try vm.state() == .running)
        let snap = box.requests().filter { $0.endpoint == "vm.snapshot" }
        #expect(snap.map { $0.json?["destination_url"] as? String } == Array(repeating: "file://" + dir, count: 3))
        expectWireDiscipline(box.requests())
    }

    @Test func shutdownLetsACooperativeGuestPowerOff() throws {
        let box = try Sandbox()
        let vm = try box.launch(box.driver())
        let pid = vm.pid
        let started = ContinuousClock.now
        try vm.shutdown(grace: 10)
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(processGone(pid))
        #expect(vm.process.exitStatus == 0, "guest power-off ends CH with code 0")
        #expect(!box.exists(box.apiSocket) && !box.exists(box.vsockSocket))
        #expect(try vm.state() == .shutdown)
        let log = box.requests()
        #expect(log.contains { $0.endpoint == "vm.power-button" && $0.status == 204 })
        #expect(!log.contains { $0.endpoint == "vmm.shutdown" }, "the guest powered off by itself")
        expectWireDiscipline(log)
    }

    @Test func shutdownFallsBackToVmmShutdownWhenTheGuestIgnoresTheButton() throws {
        let box = try Sandbox()
        let vm = try box.launch(box.driver(environment: ["CH_STANDIN_GUEST_POWEROFF": "ignore"]))
        let pid = vm.pid
        try vm.shutdown(grace: 0.5)
        #expect(processGone(pid))
        #expect(vm.process.exitStatus == 0)
        #expect(!box.exists(box.apiSocket) && !box.exists(box.vsockSocket))
        let log = box.requests()
        let stop = try #require(log.first { $0.endpoint == "vmm.shutdown" })
        #expect(stop.status == 200 && stop.response_body == "", "CH answers vmm.shutdown with 200 and an empty body")
        #expect(log.last?.endpoint == "vmm.shutdown")
        expectWireDiscipline(log)
    }

    @Test func restoreIntoAFreshProcessRuns() throws {
        let box = try Sandbox()
        let driver = box.driver()
        let first = try box.launch(driver)
        let firstBoot = try #require(box.read("app.log").split(separator: "\n").first { $0.contains("guest booted") })
        let bootID = try #require(firstBoot.split(separator: " ").first { $0.hasPrefix("boot_id=") })

        // Standby: pause, snapshot, stop the VMM.
        try first.pause()
        let dir = box.dir + "/snapshots/snapshot-latest"
        try first.snapshot(to: dir)
        // Restore needs a VMM without a VM: the running one refuses.
        let refused = statusOf(vmmError { () throws(VMMError) in try first.client.restore(sourceURL: "file://" + dir) })
        #expect(refused?.0 == 500 && refused?.1.contains("VM is already created") == true)
        try first.shutdown(grace: 1)
        #expect(processGone(first.pid))

        let second = try box.restore(driver, from: dir)
        defer { second.kill() }
        #expect(second.pid != first.pid)
        #expect(try second.state() == .running)
        let serial = box.read("app.log")
        #expect(serial.contains("resumed from snapshot") && serial.contains(String(bootID)),
                "the guest continues with the same boot id: \(serial)")
        let info = try second.client.info()
        #expect(info.config.disks?.map { $0.id } == ["rootfs", "overlay", "config"])

        let afterRestore = box.requests().filter { $0.pid == Int(second.pid) }
        #expect(afterRestore.map { $0.endpoint }.prefix(3) == ["vmm.ping", "vm.restore", "vm.resume"])
        let body = try #require(afterRestore.first { $0.endpoint == "vm.restore" }?.json)
        #expect(body["source_url"] as? String == "file://" + dir && body["prefault"] as? Bool == false)
        expectWireDiscipline(box.requests())
    }

    @Test func resizeMemoryWithinTheHotplugReserve() throws {
        let box = try Sandbox()
        let vm = try box.launch(box.driver())
        defer { vm.kill() }
        let base: Int64 = 512 << 20
        #expect(try vm.client.info().memoryActualSize == base + (1 << 30), "launch plugs the whole reserve")
        try vm.resizeMemory(to: base + (256 << 20))
        #expect(try vm.client.info().memoryActualSize == base + (256 << 20))
        let resizes = box.requests().filter { $0.endpoint == "vm.resize" }.count
        try vm.resizeMemory(to: base + (256 << 20))   // already that size: nothing is sent
        #expect(box.requests().filter { $0.endpoint == "vm.resize" }.count == resizes)
        let tooBig = statusOf(vmmError { () throws(VMMError) in try vm.resizeMemory(to: base + (2 << 30)) })
        #expect(tooBig?.0 == 500 && tooBig?.1.contains("bigger than region_size") == true)
        try vm.resizeMemory(to: base)
        #expect(try vm.client.info().memoryActualSize == base)
        expectWireDiscipline(box.requests())
    }

    @Test func addAndRemoveADisk() throws {
        let box = try Sandbox()
        let vm = try box.launch(box.driver())
        defer { vm.kill() }
        let volume = box.dir + "/vol.img"
        _ = FileManager.default.createFile(atPath: volume, contents: Data(count: 4096))
        try vm.addDisk(DiskSpec(id: "vol-abc", path: volume, readonly: false))
        let added = try vm.client.info()
        #expect(added.config.disks?.contains { $0.id == "vol-abc" && $0.path == volume && $0.readonly == false } == true)
        #expect(added.deviceTree?["vol-abc"] != nil)
        let body = try #require(box.requests().first { $0.endpoint == "vm.add-disk" })
        #expect(body.status == 200 && Set(body.json?.keys.map { $0 } ?? []) == ["path", "readonly", "id", "serial"])
        #expect(body.json?["serial"] as? String == "vol-abc")

        let duplicate = statusOf(vmmError { () throws(VMMError) in try vm.addDisk(DiskSpec(id: "vol-abc", path: volume, readonly: true)) })
        #expect(duplicate?.0 == 500)
        let missing = statusOf(vmmError { () throws(VMMError) in
            try vm.addDisk(DiskSpec(id: "vol-nope", path: box.dir + "/absent.img", readonly: false))
        })
        #expect(missing?.0 == 500 && missing?.1.contains("No such file") == true)

        try vm.removeDisk(id: "vol-abc")
        #expect(try vm.client.info().config.disks?.contains { $0.id == "vol-abc" } == false)
        #expect(statusOf(vmmError { () throws(VMMError) in try vm.removeDisk(id: "vol-abc") })?.0 == 500)
        expectWireDiscipline(box.requests())
    }

    @Test func failedBootDeletesTheVMAndStopsTheVMM() throws {
        let box = try Sandbox()
        box.spec.kernelPath = box.dir + "/no-such-kernel"
        let error = vmmError { () throws(VMMError) in _ = try box.launch(box.driver()) }
        let status = try #require(statusOf(error), "expected a status error, got \(String(describing: error))")
        #expect(status.0 == 500 && status.1.contains("Cannot open kernel file"))
        let log = box.requests()
        #expect(log.map { $0.endpoint } == ["vmm.ping", "vm.create", "vm.boot", "vm.delete", "vmm.shutdown"])
        let pid = try #require(log.first?.pid)
        #expect(processGone(Int32(pid)))
        #expect(!box.exists(box.apiSocket) && !box.exists(box.vsockSocket))
        expectWireDiscipline(log)
    }

    @Test func launchRefusesASocketThatAcceptsAndRemovesAStaleOne() throws {
        let box = try Sandbox()
        try FileManager.default.createDirectory(atPath: box.spec.runDir, withIntermediateDirectories: true)
        let fd = try listenUnix(box.apiSocket)
        let error = vmmError { () throws(VMMError) in _ = try box.launch(box.driver()) }
        guard case .process(let message)? = error else {
            close(fd); Issue.record("expected .process, got \(String(describing: error))"); return
        }
        #expect(message.contains("already accepts"))
        #expect(box.requests().isEmpty, "no VMM was started")
        close(fd)   // the socket file stays behind: stale
        #expect(box.exists(box.apiSocket))
        let staleVsock = try listenUnix(box.vsockSocket)
        close(staleVsock)
        let vm = try box.launch(box.driver())
        defer { vm.kill() }
        #expect(try vm.state() == .running)
    }

    @Test func attachFindsTheLiveVMMByPid() throws {
        let box = try Sandbox()
        let driver = box.driver()
        let vm = try box.launch(driver)
        let attached = try #require(driver.attach(box.spec, pid: vm.pid))
        #expect(attached.pid == vm.pid)
        #expect(try attached.state() == .running)
        #expect(driver.attach(box.spec, pid: getpid()) == nil, "a different pid answers on that socket")
        attached.kill()
        #expect(processGone(vm.pid))
        #expect(!box.exists(box.apiSocket))
        #expect(driver.attach(box.spec, pid: vm.pid) == nil)
    }

    @Test func spawnedVMMIsIsolated() throws {
        let box = try Sandbox()
        // A descriptor the daemon leaks (no O_CLOEXEC) must not reach the VMM.
        let marker = box.dir + "/leak-marker"
        let leaked = open(marker, O_CREAT | O_WRONLY, 0o600)
        defer { close(leaked) }
        let vm = try box.launch(box.driver(arguments: ["-v"]))
        defer { vm.kill() }
        #expect(getsid(vm.pid) == vm.pid, "started in its own session")
        let environ = try String(contentsOfFile: "/proc/\(vm.pid)/environ", encoding: .utf8)
        let names = Set(environ.split(separator: "\0").map { String($0.split(separator: "=").first ?? "") })
        // PWD is added by the stand-in's /bin/sh wrapper, not by the driver.
        #expect(names.subtracting(["PWD"]) == ["PATH", "LANG", "CH_STANDIN_PYTHON", "CH_STANDIN_LOG"], "environment: \(names)")
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(vm.pid)/fd")
        let targets = fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(vm.pid)/fd/\($0)") }
        #expect(!targets.contains(marker), "leaked descriptor inherited: \(targets)")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(vm.pid)/fd/0") == "/dev/null")
        #expect(box.read("vmm.log").contains("API server listening"), "VMM output goes to vmm.log")
    }

    @Test func newerVMMsGetRawImageTypeOnTheWire() throws {
        let box = try Sandbox()
        let vm = try box.launch(box.driver(environment: ["CH_STANDIN_VERSION": "51.0.0"]))
        defer { vm.kill() }
        #expect(vm.vmmMajorVersion == 51)
        let volume = box.dir + "/vol.img"
        _ = FileManager.default.createFile(atPath: volume, contents: Data(count: 4096))
        try vm.addDisk(DiskSpec(id: "vol-1", path: volume, readonly: false))
        let log = box.requests()
        let disks = try #require(log.first { $0.endpoint == "vm.create" }?.json?["disks"] as? [[String: Any]])
        #expect(disks.allSatisfy { $0["image_type"] as? String == "Raw" })
        #expect(log.first { $0.endpoint == "vm.add-disk" }?.json?["image_type"] as? String == "Raw")
        expectWireDiscipline(log)
    }

    @Test func availabilityFollowsTheBinary() throws {
        let box = try Sandbox()
        #expect(box.driver().isAvailable())
        #expect(box.driver().kind == "cloud-hypervisor")
        #expect(box.driver().capabilities == Capabilities(snapshot: true, memoryResize: true, diskHotplug: true, vsock: true))
        let missing = box.driver(binary: box.dir + "/no-cloud-hypervisor")
        #expect(!missing.isAvailable())
        #expect(!CloudHypervisorDriver(configuration: .init(binary: "no-such-vmm-binary-\(getpid())")).isAvailable())
        guard case .unsupported? = vmmError({ () throws(VMMError) in _ = try missing.launch(box.spec) }) else {
            Issue.record("launch without a binary must be .unsupported"); return
        }
    }
}

/// The teardown ladder against a VMM that never answers and ignores SIGTERM.
@Suite(.enabled(if: StandIn.available, "needs python3 (the hung-VMM helper)"))
struct CHProcessLadderTests {
    @Test func ladderEscalatesToSigkillAndCleansTheSocket() throws {
        let box = try Sandbox()
        try FileManager.default.createDirectory(atPath: box.spec.runDir, withIntermediateDirectories: true)
        let options = CHProcess.Options(binaryPath: StandIn.hungVMM, environment: ["CH_STANDIN_PYTHON": StandIn.pythonPath],
                                        readyTimeout: 15)
        let process = try CHProcess.spawn(options, apiSocketPath: box.apiSocket, logPath: box.spec.vmmLogPath)
        box.track(process.pid)
        #expect(process.isRunning)
        let started = ContinuousClock.now
        let outcome = process.stop(client: CHClient(socketPath: box.apiSocket, timeout: 1), shutdownWait: 0.5, termWait: 0.5)
        #expect(outcome == .sigkill)
        #expect(ContinuousClock.now - started < .seconds(6))
        #expect(processGone(process.pid))
        #expect(process.exitStatus.map { $0 & 0x7f } == SIGKILL)
        #expect(!box.exists(box.apiSocket), "the socket SIGKILL leaves behind is removed")
        #expect(process.stop(client: nil) == .alreadyExited)
    }

    @Test func aVMMThatDiesAtStartIsReportedWithItsLog() throws {
        let box = try Sandbox()
        try FileManager.default.createDirectory(atPath: box.spec.runDir, withIntermediateDirectories: true)
        // The stand-in refuses VM options on its command line and exits 2, as clap does.
        let options = CHProcess.Options(binaryPath: StandIn.wrapper, extraArguments: ["--kernel", "/x"],
                                        environment: ["CH_STANDIN_PYTHON": StandIn.pythonPath], readyTimeout: 15)
        let error = vmmError { () throws(VMMError) in
            let p = try CHProcess.spawn(options, apiSocketPath: box.apiSocket, logPath: box.spec.vmmLogPath)
            box.track(p.pid)
        }
        guard case .process(let message)? = error else { Issue.record("expected .process, got \(String(describing: error))"); return }
        #expect(message.contains("exit code 2") && message.contains("not implemented by the Cloud Hypervisor stand-in"))
    }
}
