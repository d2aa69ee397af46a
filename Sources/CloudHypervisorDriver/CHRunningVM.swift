import Foundation
import VMM
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A VM inside a running `cloud-hypervisor` process; each method names the REST call it makes.
public final class CHRunningVM: RunningVM {
    public let spec: VMSpec
    public let client: CHClient
    public let process: CHProcess
    /// The VMM's major version from `vmm.ping` (nil when unknown).
    public let vmmMajorVersion: Int?
    let timing: CloudHypervisorDriver.Configuration

    init(spec: VMSpec, client: CHClient, process: CHProcess, vmmMajorVersion: Int?,
         timing: CloudHypervisorDriver.Configuration) {
        self.spec = spec; self.client = client; self.process = process
        self.vmmMajorVersion = vmmMajorVersion; self.timing = timing
    }

    public var pid: Int32 { process.pid }

    /// `GET /api/v1/vm.info` → `state`. A VMM process that has exited reports `.shutdown` (a
    /// guest power-off ends CH's process, so "gone" means "stopped").
    public func state() throws(VMMError) -> VMRunState {
        guard process.isRunning else { return .shutdown }
        let info: CloudHypervisor.VmInfo
        do {
            info = try client.info()
        } catch {
            if !process.isRunning { return .shutdown }
            throw error
        }
        guard let state = VMRunState(rawValue: info.state) else {
            throw .decoding("vm.info state \"\(info.state)\" is not Created/Running/Paused/Shutdown")
        }
        return state
    }

    /// `PUT /api/v1/vm.pause`.
    public func pause() throws(VMMError) { try client.pause() }

    /// `PUT /api/v1/vm.resume`.
    public func resume() throws(VMMError) { try client.resume() }

    /// `PUT /api/v1/vm.snapshot {"destination_url":"file://<dir>"}`; creates `dir` (0700) if missing.
    /// The VM must be paused and `dir` must not hold a snapshot already.
    public func snapshot(to dir: String) throws(VMMError) {
        let absolute = dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + "/" + dir
        do {
            try FileManager.default.createDirectory(atPath: absolute, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw .process("cannot create snapshot directory \(absolute): \(error.localizedDescription)")
        }
        try client.snapshot(destinationURL: "file://" + absolute)
    }

    /// `GET /api/v1/vm.info`, then `PUT /api/v1/vm.resize {"desired_ram": bytes}` unless the VM
    /// already has that size (CH's virtio-mem answers 500 to a resize to the current size).
    public func resizeMemory(to bytes: Int64) throws(VMMError) {
        let memory = try client.info().config.memory
        if let memory, memory.size + (memory.hotpluggedSize ?? 0) == bytes { return }
        try client.resize(desiredRam: bytes)
    }

    /// `PUT /api/v1/vm.power-button`, then polls `GET /api/v1/vm.info` until the state is
    /// `Shutdown` or the process exits (at most `grace` seconds); then the ladder
    /// (`PUT /api/v1/vmm.shutdown` → SIGTERM → SIGKILL) and reaping. A paused or not-booted
    /// guest cannot react to the button, so it goes straight to the ladder.
    public func shutdown(grace: Double) throws(VMMError) {
        if process.isRunning, (try? client.info().state) == "Running", (try? client.powerButton()) != nil {
            let deadline = Deadline(seconds: grace)
            while process.isRunning && !deadline.passed {
                if (try? client.info().state) == "Shutdown" { break }
                usleep(50_000)
            }
        }
        let outcome = process.stop(client: client, shutdownWait: timing.vmmShutdownWait, termWait: timing.termWait)
        removeStaleVsockSocket()
        if outcome == .unkillable {
            throw .timeout("cloud-hypervisor pid \(pid) did not exit after SIGKILL")
        }
    }

    /// SIGKILL to the VMM's process group, reap, and remove the sockets it leaves. Never fails.
    public func kill() {
        process.kill()
        removeStaleVsockSocket()
    }

    /// `PUT /api/v1/vm.add-disk {"path","readonly","id"}` (hot-plug on a booted VM).
    public func addDisk(_ disk: DiskSpec) throws(VMMError) {
        try client.addDisk(CHConfig.disk(for: disk, vmmMajorVersion: vmmMajorVersion))
    }

    /// `PUT /api/v1/vm.remove-device {"id"}`.
    public func removeDisk(id: String) throws(VMMError) {
        try client.removeDevice(id: id)
    }

    func removeStaleVsockSocket() {
        guard !process.isRunning else { return }
        CloudHypervisorDriver.removeStaleSocket(CHConfig.vsockSocketPath(runDir: spec.runDir))
    }
}
