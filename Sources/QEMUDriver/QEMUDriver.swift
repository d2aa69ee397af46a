import Foundation
import Glibc
import VMM

/// Deadlines of the QEMU driver's waits.
public struct QEMUTimeouts: Sendable, Equatable {
    /// Spawn until the QMP socket answers the greeting.
    public var qmpReady: Duration
    /// One ordinary QMP command.
    public var command: Duration
    /// A snapshot (outgoing migration) or restore (incoming migration).
    public var migration: Duration
    /// `device_del` until `DEVICE_DELETED` (the guest must release the device; Linux's pciehp
    /// waits about 5 s after the attention button).
    public var deviceRemoval: Duration
    /// QMP `quit` until the process exits, then SIGTERM until it exits (then SIGKILL).
    public var quit: Duration
    public var term: Duration

    public init(qmpReady: Duration = .seconds(10), command: Duration = .seconds(30), migration: Duration = .seconds(600),
                deviceRemoval: Duration = .seconds(30), quit: Duration = .seconds(5), term: Duration = .seconds(5)) {
        self.qmpReady = qmpReady; self.command = command; self.migration = migration
        self.deviceRemoval = deviceRemoval; self.quit = quit; self.term = term
    }
}

/// `HypervisorDriver` for QEMU (`qemu-system-x86_64`), controlled over QMP. Stateless: each
/// launch/restore/attach returns a `QEMUVM` that owns its process and QMP connection.
public struct QEMUDriver: HypervisorDriver {
    public let kind = "qemu"
    /// Binary name (looked up in PATH) or absolute path.
    public let binary: String
    /// When set, replaces `VMSpec.accel` (e.g. `tcg` on hosts whose KVM cannot run stock guests).
    public let accel: String?
    public let options: QEMUOptions
    public let timeouts: QEMUTimeouts

    /// `vhostVsock` nil means: add vhost-vsock when `/dev/vhost-vsock` exists on this host.
    public init(binary: String = "qemu-system-x86_64", accel: String? = nil, machine: QEMUMachine = .q35,
                cpuModel: String? = nil, spareHotplugPorts: Int = 8, vhostVsock: Bool? = nil,
                timeouts: QEMUTimeouts = QEMUTimeouts()) {
        self.binary = binary
        self.accel = accel
        self.options = QEMUOptions(machine: machine, cpuModel: cpuModel, spareHotplugPorts: spareHotplugPorts,
                                   vhostVsock: vhostVsock ?? FileManager.default.fileExists(atPath: "/dev/vhost-vsock"))
        self.timeouts = timeouts
    }

    /// Snapshots always (migration to a file); memory resize and disk hot-plug on q35 (virtio-mem,
    /// PCIe root ports); vsock when vhost-vsock is enabled.
    public var capabilities: Capabilities {
        Capabilities(snapshot: true, memoryResize: options.machine == .q35, diskHotplug: options.machine == .q35,
                     vsock: options.vhostVsock)
    }

    public func isAvailable() -> Bool { resolvedBinary() != nil }

    /// The agent's virtio-serial port, through the chardev socket QEMU listens on.
    public func agentChannel(_ spec: VMSpec) -> AgentChannel? { .unixSocket(QEMUArgs.agentSocketPath(spec)) }

    /// The absolute path of the binary, or nil when it is missing or not executable.
    public func resolvedBinary() -> String? {
        if binary.contains("/") { return access(binary, X_OK) == 0 ? binary : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/local/bin", "/usr/bin", "/bin"]
        for d in dirs where !d.isEmpty {
            let p = d + "/" + binary
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }

    /// The spec as this driver runs it (`accel` override applied).
    public func effective(_ spec: VMSpec) -> VMSpec {
        var s = spec
        if let accel { s.accel = accel }
        return s
    }

    /// The argv a launch of `spec` runs (binary excluded).
    public func arguments(for spec: VMSpec) throws(VMMError) -> [String] {
        let s = effective(spec)
        return try QEMUArgs.build(s, layout: QEMULayout.initial(for: s, options: options), options: options)
    }

    /// Starts QEMU paused (`-S`), negotiates QMP, then `cont`: the VM is running on return.
    public func launch(_ spec: VMSpec) throws(VMMError) -> any RunningVM {
        try launchVM(spec)
    }

    /// `launch` with the concrete type.
    public func launchVM(_ spec: VMSpec) throws(VMMError) -> QEMUVM {
        let s = effective(spec)
        let layout = QEMULayout.initial(for: s, options: options)
        let vm = try start(s, layout: layout, incoming: nil)
        do {
            try vm.qmp().execute("cont", timeout: timeouts.command)
        } catch {
            vm.kill()
            throw error
        }
        return vm
    }

    /// Starts a fresh QEMU with the snapshot's device layout and `-incoming defer`, feeds it
    /// `<dir>/memory` (QMP `getfd` + `migrate-incoming fd:`), waits until the load completes
    /// (status leaves `inmigrate`), then `cont`: the VM is running on return.
    public func restore(_ spec: VMSpec, from snapshotDir: String) throws(VMMError) -> any RunningVM {
        try restoreVM(spec, from: snapshotDir)
    }

    /// `restore` with the concrete type.
    public func restoreVM(_ spec: VMSpec, from snapshotDir: String) throws(VMMError) -> QEMUVM {
        let s = effective(spec)
        let memoryPath = snapshotDir + "/" + QEMUVM.memoryFileName
        guard FileManager.default.fileExists(atPath: memoryPath) else {
            throw .process("no snapshot at \(memoryPath)")
        }
        var layout = QEMULayout.read(from: snapshotDir + "/" + QEMULayout.fileName) ?? QEMULayout.initial(for: s, options: options)
        layout.accommodate(s)
        let vm = try start(s, layout: layout, incoming: "defer")
        do {
            let began = ContinuousClock.now
            let fd = open(memoryPath, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw VMMError.process("cannot open \(memoryPath): \(errnoText())") }
            defer { _ = close(fd) }
            let q = try vm.qmp()
            try q.execute("getfd", ["fdname": .string(QEMUVM.restoreFDName)], passing: fd, timeout: timeouts.command)
            try q.execute("migrate-incoming", ["uri": .string("fd:" + QEMUVM.restoreFDName)], timeout: timeouts.command)
            let deadline = ContinuousClock.now + timeouts.migration
            var status = "inmigrate"
            while true {
                guard vm.process.isAlive() else { throw VMMError.process("QEMU exited") }
                status = try vm.runStatus()
                if status != "inmigrate" { break }
                if ContinuousClock.now >= deadline { throw VMMError.timeout("restore from \(memoryPath)") }
                Thread.sleep(forTimeInterval: 0.005)
            }
            guard status == "paused" || status == "prelaunch" || status == "postmigrate" else {
                throw VMMError.status(500, "restore ended in QEMU status \(status)")
            }
            vm.timings.set(restoreLoad: began.duration(to: .now))
            try q.execute("cont", timeout: timeouts.command)
        } catch {
            // A stream QEMU cannot load makes it exit: report its words rather than the broken pipe.
            let exited = vm.process.waitForExit(timeout: .milliseconds(300))
            vm.kill()
            if exited { throw .process("QEMU exited while restoring from \(memoryPath): \(vm.logSinceStart())") }
            if let e = error as? VMMError { throw e }
            throw .process("restore: \(error)")
        }
        return vm
    }

    /// Re-attaches to the QEMU of `spec` still running as `pid` (after a Provisioner restart):
    /// nil unless that pid is this VM's QEMU and its QMP socket answers.
    public func attach(_ spec: VMSpec, pid: Int32) -> (any RunningVM)? {
        attachVM(spec, pid: pid)
    }

    /// `attach` with the concrete type.
    public func attachVM(_ spec: VMSpec, pid: Int32) -> QEMUVM? {
        let s = effective(spec)
        let qmpPath = QEMUArgs.qmpSocketPath(s)
        guard let process = QEMUProcess.adopt(pid: pid, marker: qmpPath, runDir: s.runDir) else { return nil }
        guard let client = try? QMPClient.connect(path: qmpPath, timeout: .seconds(3)) else { return nil }
        var layout = QEMULayout.read(from: s.runDir + "/" + QEMULayout.fileName) ?? QEMULayout.initial(for: s, options: options)
        layout.accommodate(s)
        return QEMUVM(spec: s, layout: layout, process: process, client: client, timeouts: timeouts,
                      logOffset: nil, spawnToQMP: nil)
    }

    // MARK: - Start-up

    /// Spawns QEMU (paused) and connects QMP. On any failure nothing is left running.
    func start(_ spec: VMSpec, layout: QEMULayout, incoming: String?) throws(VMMError) -> QEMUVM {
        guard let bin = resolvedBinary() else {
            throw .process("\(binary) not found (install qemu-system-x86 or set the QEMU binary path)")
        }
        let qmpPath = QEMUArgs.qmpSocketPath(spec)
        guard qmpPath.utf8.count <= UnixSocket.maxPathBytes else {
            throw .process("QMP socket path \(qmpPath) exceeds \(UnixSocket.maxPathBytes) bytes: use a shorter run directory")
        }
        do {
            try FileManager.default.createDirectory(atPath: spec.runDir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw .process("cannot create run directory \(spec.runDir): \(error)")
        }
        // A socket that still accepts belongs to a live VMM: never unlink it from under it.
        if let live = try? UnixSocket.connect(path: qmpPath) {
            live.close()
            throw .process("a VMM already serves \(qmpPath); attach to it or stop it first")
        }
        unlink(qmpPath)
        try layout.write(to: spec.runDir + "/" + QEMULayout.fileName)

        let args = try QEMUArgs.build(spec, layout: layout, options: options, incoming: incoming)
        let logOffset = (try? FileManager.default.attributesOfItem(atPath: spec.vmmLogPath)[.size] as? Int) ?? 0
        let began = ContinuousClock.now
        let process = try QEMUProcess.spawn(binary: bin, arguments: args, logPath: spec.vmmLogPath, runDir: spec.runDir)

        let deadline = began + timeouts.qmpReady
        var lastError = VMMError.timeout("QMP socket \(qmpPath)")
        while true {
            if !process.isAlive() {
                unlink(qmpPath)
                throw .process("QEMU exited during start-up: " + QEMUVM.logTail(spec.vmmLogPath, from: logOffset))
            }
            if FileManager.default.fileExists(atPath: qmpPath) {
                do throws(VMMError) {
                    let remaining = max(.milliseconds(200), ContinuousClock.now.duration(to: deadline))
                    let client = try QMPClient.connect(path: qmpPath, timeout: remaining)
                    return QEMUVM(spec: spec, layout: layout, process: process, client: client, timeouts: timeouts,
                                  logOffset: logOffset, spawnToQMP: began.duration(to: .now))
                } catch {
                    lastError = error
                }
            }
            if ContinuousClock.now >= deadline {
                process.killHard()
                unlink(qmpPath)
                throw .timeout("QEMU did not answer on \(qmpPath) within \(timeouts.qmpReady) (\(lastError))")
            }
            Thread.sleep(forTimeInterval: 0.005)
        }
    }
}
