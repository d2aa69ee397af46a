import Foundation
import Model
import Store
import JSON
import VMM
import GuestBoot
import Disk
import Network
import QEMUDriver
import CloudHypervisorDriver
import SQLite

/// Composes instance lifecycles (contract §2.3–§2.4) from single-hop driver operations, with an
/// undo list for every multi-step change. The running VMs are kept in `registry`; the database
/// row is updated after each step so the API always shows the truth.
public final class InstanceManager: @unchecked Sendable {
    let config: ProvisionerConfig
    let table: DriverTable
    let assets: GuestAssets
    let network: GuestNetwork
    /// The guest-agent links; an instance is `Initializing` until its agent answers.
    public let agents: AgentHub
    let log = Log("prov.instances")
    let lock = NSLock()
    var registry: [String: any RunningVM] = [:]   // guarded by `lock`
    /// Keeps the VMM-written logs of running VMs under `LOG_MAX_BYTES` (rotation).
    public let logWatcher = GuestLogWatcher(limits: InstanceLog.limits)

    public init(config: ProvisionerConfig, drivers: DriverTable, assets: GuestAssets, network: GuestNetwork, agents: AgentHub) {
        self.config = config
        self.agents = agents
        self.table = drivers
        self.assets = assets
        self.network = network
    }

    public var drivers: [String] { table.kinds }

    // MARK: registry

    func vm(_ id: String) -> (any RunningVM)? { lock.lock(); defer { lock.unlock() }; return registry[id] }
    func setVM(_ id: String, _ vm: (any RunningVM)?) { lock.lock(); registry[id] = vm; lock.unlock() }

    // MARK: paths

    func dir(_ id: String) -> String { "\(config.guestsDir)/\(id)" }
    func snapshotDir(_ id: String) -> String { dir(id) + "/snapshots/snapshot-latest" }
    func logDir(_ id: String) -> String { GuestLogFiles.directory(instanceDir: dir(id)) }
    func note(_ id: String, _ msg: String, level: String = "INFO") {
        InstanceLog.append(dataDir: config.dataDir, instanceID: id, level: level, msg)
    }

    // MARK: jobs

    func run(_ job: JobRecord, store: Store) throws {
        guard var inst = try store.instance(id: job.target) else {
            if job.kind == .delete { return }
            throw APIError(.notFound, "instance \(job.target) not found")
        }
        switch job.kind {
        case .create:
            try create(&inst, store: store)
        case .delete:
            try delete(inst, store: store)
        case .start, .stop, .standby, .restore:
            if let op = InstanceOperation(rawValue: job.kind.rawValue), let e = op.gate(inst.state) { throw e }
            note(inst.id, "\(job.kind.rawValue) requested")
            do {
                switch job.kind {
                case .start: try start(&inst, store: store)
                case .stop: try stop(&inst, store: store)
                case .standby: try standby(&inst, store: store)
                default: try restore(&inst, store: store)
                }
                note(inst.id, "\(job.kind.rawValue) done: state \(inst.state.rawValue)")
            } catch {
                note(inst.id, "\(job.kind.rawValue) failed: \(error)", level: "ERROR")
                throw error
            }
        case .attach:
            try liveAttach(inst, job: job, store: store)
        case .detach:
            try liveDetach(inst, job: job, store: store)
        default:
            throw APIError(.internalError, "unexpected job kind \(job.kind.rawValue)")
        }
    }

    // MARK: building the VM

    /// The VM description for an instance: disks in contract order (vda image, vdb overlay, vdc
    /// config, vdd… volumes), serial to app.log, control sockets in the instance directory.
    func spec(_ inst: InstanceRecord, image: ImageRuntimeConfig, net: NetworkAllocation?) throws -> VMSpec {
        let (kernel, initramfs) = try assets.paths()
        let d = dir(inst.id)
        var disks = [DiskSpec(id: "rootfs", path: image.diskPath, readonly: true),
                     DiskSpec(id: "overlay", path: d + "/overlay.raw", readonly: false),
                     DiskSpec(id: "config", path: d + "/config.ext4", readonly: true)]
        for v in inst.volumes {
            disks.append(DiskSpec(id: "vol-\(v.volumeID)", path: "\(config.volumesDir)/\(v.volumeID)/data.raw",
                                  readonly: v.readonly || v.overlay))
            if v.overlay {
                disks.append(DiskSpec(id: "volov-\(v.volumeID)", path: d + "/vol-overlays/\(v.volumeID).raw", readonly: false))
            }
        }
        return VMSpec(instanceID: inst.id, vcpus: inst.vcpus, memoryBytes: inst.size, hotplugBytes: inst.hotplugSize,
                      kernelPath: kernel, initramfsPath: initramfs, cmdline: config.guestCmdline, disks: disks,
                      net: net.map(GuestNetwork.netSpec),
                      serialLogPath: GuestLogFiles.live(.app, in: logDir(inst.id)),
                      vmmLogPath: GuestLogFiles.live(.vmm, in: logDir(inst.id)), runDir: d,
                      vsockCID: vsockCID(inst.id), accel: config.qemuAccel)
    }

    // MARK: vsock CID

    /// The file in the instance directory holding the CID its VM was launched with.
    static let vsockCIDFileName = "vsock-cid"

    /// The guest CID of an instance: the one recorded at its last fresh launch (so a restored or
    /// adopted VM keeps the CID its snapshot or running guest has), else the legacy id hash
    /// (VMs launched before CIDs were recorded).
    func vsockCID(_ id: String) -> UInt32 {
        if let data = FileManager.default.contents(atPath: dir(id) + "/" + Self.vsockCIDFileName),
           let cid = UInt32(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
           Self.isUsableCID(cid) {
            return cid
        }
        return Self.legacyVsockCID(id)
    }

    /// Picks and records the CID for a fresh launch: 3 + the row's SQLite rowid. Rowids are unique
    /// among the rows of a table, and an instance keeps its row (and so its CID) for life, so two
    /// live instances never share a CID (the id hash used before collided for ids sharing their
    /// first 8 characters, and the second VM's vhost-vsock then failed to start).
    func assignVsockCID(_ inst: InstanceRecord, store: Store) throws {
        guard let rowid = try store.db.queryOne("SELECT rowid FROM instances WHERE id = ?", [inst.id])?.int("rowid"),
              let cid = Self.vsockCID(rowid: rowid) else {
            throw APIError(.internalError, "instance \(inst.id) has no row to derive its vsock CID from")
        }
        let path = dir(inst.id) + "/" + Self.vsockCIDFileName
        guard FileManager.default.createFile(atPath: path, contents: Data("\(cid)\n".utf8)) else {
            throw APIError(.internalError, "cannot record the vsock CID of instance \(inst.id)")
        }
    }

    /// 3 + rowid, or nil outside the usable range (0–2 are reserved, 2³²−1 is VMADDR_CID_ANY).
    static func vsockCID(rowid: Int64) -> UInt32? {
        guard rowid >= 0, rowid <= Int64(UInt32.max) - 4 else { return nil }
        return UInt32(rowid + 3)
    }

    static func isUsableCID(_ cid: UInt32) -> Bool { cid >= 3 && cid < UInt32.max }

    /// A CID in 3…2³²−1 derived from the id (base-37 hash of its first 8 characters). Only for VMs
    /// launched before CIDs were recorded: it collides for ids sharing their first 8 characters.
    static func legacyVsockCID(_ id: String) -> UInt32 {
        var h: UInt64 = 0
        for c in id.utf8.prefix(8) {
            let v: UInt64 = c >= 97 ? UInt64(c - 97 + 10) : c >= 48 && c <= 57 ? UInt64(c - 48) : 36
            h = (h &* 37 &+ v) % 4_294_967_292
        }
        return UInt32(h + 3)
    }

    /// Guest devices for the volumes (vdd onwards; an overlay volume takes two).
    func guestVolumes(_ inst: InstanceRecord) -> [GuestConfig.Volume] {
        var out: [GuestConfig.Volume] = []
        var index = 3
        func dev(_ i: Int) -> String { "vd" + String(UnicodeScalar(UInt8(97 + i))) }
        for v in inst.volumes {
            if v.overlay {
                out.append(.init(device: dev(index), mountPath: v.mountPath, mode: .overlay, overlayDevice: dev(index + 1)))
                index += 2
            } else {
                out.append(.init(device: dev(index), mountPath: v.mountPath, mode: v.readonly ? .readOnly : .readWrite))
                index += 1
            }
        }
        return out
    }

    /// Writes config.ext4 for the current instance settings (regenerated on every start).
    func writeConfigDisk(_ inst: InstanceRecord, image: ImageRuntimeConfig, net: NetworkAllocation?) throws {
        let path = dir(inst.id) + "/config.ext4"
        try? FileManager.default.removeItem(atPath: path)
        let gc = GuestConfig(instanceID: inst.id, instanceName: inst.name, image: inst.image, entrypoint: image.entrypoint,
                             cmd: image.cmd, workdir: image.workingDir ?? "/",
                             imageEnv: image.env.keys.sorted().map { "\($0)=\(image.env[$0]!)" }, env: inst.env,
                             network: net.map(GuestNetwork.guestNetwork), volumes: guestVolumes(inst), agent: agentEnabled(inst))
        try ConfigDisk.build(gc, at: path)
    }

    func imageConfig(_ inst: InstanceRecord, store: Store) throws -> ImageRuntimeConfig {
        guard let img = try store.imageRuntimeConfig(digest: inst.imageDigest) else {
            throw APIError(.imageNotReady, "image \(inst.image) (\(inst.imageDigest)) is no longer available; pull it again")
        }
        return img
    }

    func networkCheck(_ inst: InstanceRecord) throws {
        if inst.networkEnabled { _ = try network.require() }
    }

    func boot(_ inst: inout InstanceRecord, image: ImageRuntimeConfig, net: NetworkAllocation?, store: Store) throws {
        let driver = try table.driver(inst.hypervisor)
        let vm: any RunningVM
        try assignVsockCID(inst, store: store)
        let vmSpec = try spec(inst, image: image, net: net)
        do throws(VMMError) { vm = try driver.launch(vmSpec) } catch {
            throw APIError(.internalError, "the \(driver.kind) VMM failed to start the VM: \(error) (see the vmm log)")
        }
        setVM(inst.id, vm)
        logWatcher.watch(inst.id, logDir: logDir(inst.id), pid: vm.pid)
        if inst.hotplugSize > 0 && driver.capabilities.memoryResize {
            do { try vm.resizeMemory(to: inst.size + inst.hotplugSize) } catch {
                note(inst.id, "memory hotplug to \(Size.format(inst.size + inst.hotplugSize)) failed: \(error)", level: "WARN")
            }
        }
        inst.hypervisor = driver.kind
        inst.vmmPID = Int(vm.pid)
        inst.state = agentEnabled(inst) ? .initializing : .running
        inst.stateError = nil
        inst.startedAt = Timestamp.now()
        try store.updateInstanceRuntime(inst)
        awaitAgent(&inst, driver: driver, spec: vmSpec, store: store)
        // A create stays `creating` until here, so a Provisioner killed while the guest boots
        // rolls the create back at restart (the client was told it was interrupted).
        if inst.creating {
            inst.creating = false
            try store.updateInstanceRuntime(inst)
        }
    }

    // MARK: guest agent

    /// Whether this instance's guest runs the agent: its binary was found at start and the
    /// instance was not created with `skip_guest_agent`.
    func agentEnabled(_ inst: InstanceRecord) -> Bool { config.agentBinary != nil && !inst.skipGuestAgent }

    /// Connects the agent link of a VM that just started (launch, restore) and waits, bounded, for
    /// its hello: then the instance is `Running`. Past the bound it stays `Initializing` and the
    /// link's ready callback flips it later.
    func awaitAgent(_ inst: inout InstanceRecord, driver: any HypervisorDriver, spec: VMSpec, store: Store) {
        guard agentEnabled(inst), let channel = driver.agentChannel(spec) else { return }
        agents.connect(inst.id, channel: channel)
        let t0 = Date()
        if agents.waitReady(inst.id, timeout: config.agentReadyTimeout) {
            inst.state = .running
            _ = try? store.markAgentReady(id: inst.id)
            note(inst.id, "guest agent ready after \(Int(Date().timeIntervalSince(t0) * 1000)) ms")
        } else {
            note(inst.id, "guest agent not ready within \(Int(config.agentReadyTimeout)) s; the instance stays Initializing until it answers", level: "WARN")
        }
    }

    /// Re-opens the agent link of an adopted or resumed VM without waiting.
    func reconnectAgent(_ inst: InstanceRecord) {
        guard agentEnabled(inst), let driver = try? table.driver(inst.hypervisor) else { return }
        // The channel depends only on the instance's run directory.
        let sp = VMSpec(instanceID: inst.id, vcpus: inst.vcpus, memoryBytes: inst.size, hotplugBytes: 0, kernelPath: "",
                        initramfsPath: "", cmdline: "", disks: [], net: nil, serialLogPath: "", vmmLogPath: "",
                        runDir: dir(inst.id), vsockCID: vsockCID(inst.id))
        guard let channel = driver.agentChannel(sp) else { return }
        agents.connect(inst.id, channel: channel)
    }

    // MARK: operations

    /// Create and boot, with an undo list: the VMM, the directory and the row go when any step fails.
    func create(_ inst: inout InstanceRecord, store: Store) throws {
        let d = dir(inst.id)
        let id = inst.id
        var undo: [() -> Void] = [{ try? store.deleteInstance(id: id) }]
        do {
            try FileManager.default.createDirectory(atPath: logDir(id), withIntermediateDirectories: true)
            undo.append { [self] in
                if let vm = vm(id) { vm.kill(); setVM(id, nil) }
                logWatcher.unwatch(id)
                try? FileManager.default.removeItem(atPath: d)
            }
            note(id, "create requested: image \(inst.image) (\(inst.imageDigest))")
            try networkCheck(inst)
            _ = try table.driver(inst.hypervisor)
            let image = try imageConfig(inst, store: store)
            try DiskImage.makeEmptyExt4(at: d + "/overlay.raw", size: inst.overlaySize, label: "overlay", journal: false)
            for v in inst.volumes where v.overlay {
                try FileManager.default.createDirectory(atPath: d + "/vol-overlays", withIntermediateDirectories: true)
                try DiskImage.makeEmptyExt4(at: d + "/vol-overlays/\(v.volumeID).raw", size: v.overlaySize ?? Size.GiB, journal: false)
            }
            var net: NetworkAllocation? = nil
            if inst.networkEnabled {
                undo.append { [self] in network.detach(id) }
                net = try network.attach(&inst, store: store)
            }
            try writeConfigDisk(inst, image: image, net: net)
            try boot(&inst, image: image, net: net, store: store)
            note(id, "created and booted on \(inst.hypervisor ?? "?") pid \(inst.vmmPID ?? 0)")
            log.info("instance created", ["instance_id": id, "hypervisor": inst.hypervisor ?? "", "pid": String(inst.vmmPID ?? 0)])
        } catch {
            note(id, "create failed: \(error)", level: "ERROR")
            for u in undo.reversed() { u() }
            if let e = error as? APIError { throw e }
            throw APIError(.internalError, "create failed: \(error)")
        }
    }

    /// Stop: graceful power-off with a timeout, then hard. The overlay disk keeps the guest's writes.
    func stop(_ inst: inout InstanceRecord, store: Store) throws {
        agents.disconnect(inst.id)
        if let vm = vm(inst.id) {
            do { try vm.shutdown(grace: config.stopGraceSeconds) } catch { vm.kill() }
            setVM(inst.id, nil)
        } else if let pid = inst.vmmPID {
            killStoredVMM(inst, pid: pid)
        }
        logWatcher.unwatch(inst.id)
        network.detach(inst.id)
        inst.state = .stopped
        inst.vmmPID = nil
        inst.stoppedAt = Timestamp.now()
        try store.updateInstanceRuntime(inst)
    }

    /// Start: regenerated config disk, fresh VMM, boot.
    func start(_ inst: inout InstanceRecord, store: Store) throws {
        try networkCheck(inst)
        let image = try imageConfig(inst, store: store)
        do {
            // A fresh allocation and a regenerated config disk on every start.
            let net = inst.networkEnabled ? try network.attach(&inst, store: store) : nil
            try writeConfigDisk(inst, image: image, net: net)
            try boot(&inst, image: image, net: net, store: store)
        } catch {
            agents.disconnect(inst.id)
            if let vm = vm(inst.id) { vm.kill(); setVM(inst.id, nil) }
            network.detach(inst.id)
            throw error
        }
    }

    /// Standby: shrink memory, pause, snapshot, stop the VMM. On a failed snapshot the VM resumes.
    func standby(_ inst: inout InstanceRecord, store: Store) throws {
        guard let vm = vm(inst.id) else { throw APIError(.internalError, "no live VMM handle for instance \(inst.id)") }
        let driver = try table.driver(inst.hypervisor)
        guard driver.capabilities.snapshot else {
            throw APIError(.notImplemented, "the \(driver.kind) driver cannot snapshot")
        }
        if inst.hotplugSize > 0 && driver.capabilities.memoryResize {
            try? vm.resizeMemory(to: inst.size)
        }
        let snap = snapshotDir(inst.id)
        try? FileManager.default.removeItem(atPath: snap)
        try FileManager.default.createDirectory(atPath: snap, withIntermediateDirectories: true)
        // Exec sessions end here; the agent itself is frozen with the guest and answers again after restore.
        agents.disconnect(inst.id)
        do {
            try vm.pause()
            inst.state = .paused
            try store.updateInstanceRuntime(inst)
            try vm.snapshot(to: snap)
            // Marks the snapshot whole: reconcile after a crash trusts only marked snapshots.
            FileManager.default.createFile(atPath: snap + "/.complete", contents: nil)
        } catch {
            try? FileManager.default.removeItem(atPath: snap)
            try? vm.resume()
            inst.state = agentEnabled(inst) ? .initializing : .running
            try? store.updateInstanceRuntime(inst)
            reconnectAgent(inst)
            throw APIError(.internalError, "snapshot failed, the instance keeps running: \(error)")
        }
        vm.kill()
        setVM(inst.id, nil)
        logWatcher.unwatch(inst.id)
        network.detach(inst.id)   // the allocation is kept for restore
        inst.state = .standby
        inst.hasSnapshot = true
        inst.vmmPID = nil
        inst.stoppedAt = Timestamp.now()
        try store.updateInstanceRuntime(inst)
    }

    /// Restore: fresh VMM from the snapshot, resumed; processes continue where they were.
    func restore(_ inst: inout InstanceRecord, store: Store) throws {
        let snap = snapshotDir(inst.id)
        guard FileManager.default.fileExists(atPath: snap) else {
            throw APIError(.internalError, "instance \(inst.id) has no snapshot to restore")
        }
        let driver = try table.driver(inst.hypervisor)
        let image = try imageConfig(inst, store: store)
        let vm: any RunningVM
        let vmSpec: VMSpec
        do {
            let net = try network.reattach(inst)
            vmSpec = try spec(inst, image: image, net: net)
            vm = try driver.restore(vmSpec, from: snap)
        } catch let e as VMMError {
            network.detach(inst.id)
            throw APIError(.internalError, "restore failed, the snapshot is kept: \(e)")
        } catch {
            network.detach(inst.id)
            throw error
        }
        setVM(inst.id, vm)
        logWatcher.watch(inst.id, logDir: logDir(inst.id), pid: vm.pid)   // the restored VMM writes the same live files
        try? FileManager.default.removeItem(atPath: snap)
        // Running at once: standby needs Running, so the agent frozen in the snapshot had answered
        // and goes on where it was. Its link reconnects in the background (exec waits for it).
        inst.state = .running
        inst.hasSnapshot = false
        inst.vmmPID = Int(vm.pid)
        inst.startedAt = Timestamp.now()
        try store.updateInstanceRuntime(inst)
        if agentEnabled(inst), let channel = driver.agentChannel(vmSpec) { agents.connect(inst.id, channel: channel) }
    }

    /// Delete from any state: the VMM is killed, then the directory and the row go.
    func delete(_ inst: InstanceRecord, store: Store) throws {
        agents.disconnect(inst.id)
        if let vm = vm(inst.id) { vm.kill(); setVM(inst.id, nil) } else if let pid = inst.vmmPID { killStoredVMM(inst, pid: pid) }
        logWatcher.unwatch(inst.id)
        network.detach(inst.id)
        try? FileManager.default.removeItem(atPath: dir(inst.id))
        try store.deleteInstance(id: inst.id)
        log.info("instance deleted", ["instance_id": inst.id])
    }

    // MARK: stored pids

    /// What a VMM of the instance directory `dir` carries on its command line: its control socket
    /// (QEMU's QMP socket, Cloud Hypervisor's API socket), which names the instance directory.
    static func vmmMarkers(dir: String) -> [String] {
        [dir + "/" + QEMUArgs.qmpSocketName, CHConfig.apiSocketPath(runDir: dir)]
    }

    /// Proves that `pid`, read from the database, is still this instance's VMM: its command line
    /// names the instance's control socket and, when the spawn record is there, it is that very
    /// process (pid, start time, boot). After a host reboot or a long time the number may belong
    /// to any process: such a pid must be treated as gone and never signalled.
    static func verifyVMM(dir: String, pid: Int) -> Result<VMMProcessHandle, VMMProcessMismatch> {
        guard pid > 1, pid <= Int(Int32.max) else { return .failure(.gone) }
        let record = VMMProcessRecord.read(runDir: dir)
        var last: VMMProcessMismatch = .gone
        for marker in vmmMarkers(dir: dir) {
            switch VMMProcessHandle.verify(pid: Int32(pid), marker: marker, record: record) {
            case .success(let h): return .success(h)
            case .failure(.markerMissing(let a)): last = .markerMissing(a)   // try the other hypervisor's marker
            case .failure(let why): return .failure(why)
            }
        }
        return .failure(last)
    }

    /// `verifyVMM` for an instance, logging a refusal (a live process that is not our VMM).
    func verifyVMM(_ inst: InstanceRecord, pid: Int) -> VMMProcessHandle? {
        switch Self.verifyVMM(dir: dir(inst.id), pid: pid) {
        case .success(let h): return h
        case .failure(let why):
            if why != .gone {
                note(inst.id, "stored VMM pid \(pid) is not this instance's VMM (\(why)); it is treated as gone and not signalled", level: "WARN")
                log.warning("stored VMM pid is not this instance's VMM; not signalled",
                            ["instance_id": inst.id, "pid": String(pid), "reason": "\(why)"])
            }
            return nil
        }
    }

    /// SIGKILLs the instance's VMM by its stored pid once proven to be it (through its pidfd), and
    /// waits for it to go; a pid that fails the proof is left alone.
    func killStoredVMM(_ inst: InstanceRecord, pid: Int) {
        guard let h = verifyVMM(inst, pid: pid) else { return }
        Self.kill(h)
    }

    /// SIGKILL through the handle, then up to 1 s for the process to go (reaped when our child).
    static func kill(_ h: VMMProcessHandle) {
        guard h.send(SIGKILL) else { return }
        for _ in 0..<50 {
            var status: Int32 = 0
            if waitpid(h.pid, &status, WNOHANG) == h.pid || !h.exists { return }
            if ProcFacts.stat(h.pid).map({ $0.state == "Z" || $0.state == "X" }) == true { return }
            usleep(20_000)
        }
    }

    static func alive(_ pid: Int) -> Bool {
        guard pid > 1 else { return false }
        var status: Int32 = 0
        if waitpid(Int32(pid), &status, WNOHANG) == Int32(pid) { return false }   // our child, exited
        return Foundation.kill(Int32(pid), 0) == 0
    }

    /// True while the stored pid is alive and still this instance's VMM.
    func vmmAlive(_ inst: InstanceRecord, pid: Int) -> Bool {
        Self.alive(pid) && verifyVMM(inst, pid: pid) != nil
    }

    // MARK: watching and reconciling

    /// Keeps states true: a VMM that exited makes its instance Stopped; one that does not answer
    /// makes it Unknown with the reason. Called periodically, and once at start-up.
    public func watch(store: Store, busyTargets: Set<String> = []) {
        guard let all = try? store.listInstances() else { return }
        for var inst in all where !inst.creating && !busyTargets.contains(inst.id) {
            guard let pid = inst.vmmPID else { continue }
            if !vmmAlive(inst, pid: pid) {
                agents.disconnect(inst.id)
                setVM(inst.id, nil)
                inst.state = .stopped
                inst.vmmPID = nil
                inst.stoppedAt = Timestamp.now()
                try? store.updateInstanceRuntime(inst)
                note(inst.id, "VMM (pid \(pid)) exited; instance is Stopped", level: "WARN")
                log.warning("VMM exited", ["instance_id": inst.id, "pid": String(pid)])
                continue
            }
            guard let vm = vm(inst.id) else { continue }
            let observed: InstanceState
            var err: String? = nil
            do {
                switch try vm.state() {
                case .created: observed = .created
                // Initializing lasts until the agent first answers; a link that is briefly down
                // (after a restore, a Provisioner restart) does not make a Running instance go back.
                case .running:
                    observed = inst.state == .initializing && agentEnabled(inst) && !agents.isReady(inst.id) ? .initializing : .running
                case .paused: observed = .paused
                case .shutdown: observed = .shutdown
                }
            } catch {
                observed = .unknown
                err = "failed to query VMM: \(error)"
            }
            if observed != inst.state || err != inst.stateError {
                try? store.setInstanceState(id: inst.id, observed, error: err)
            }
        }
    }

    /// Start-up reconcile: adopt live VMMs, mark dead ones Stopped (or Standby with a snapshot),
    /// roll back interrupted creates, resume VMs left paused by an interrupted standby, and remove
    /// orphans (VMM processes and directories no instance owns).
    public func reconcile(store: Store) throws {
        var known = Set<String>()
        for var inst in try store.listInstances() {
            known.insert(inst.id)
            if inst.creating {
                if try store.hasPendingJob(target: inst.id, kinds: [.create]) { continue }
                if let pid = inst.vmmPID { killStoredVMM(inst, pid: pid) }
                Self.killOrphans(in: dir(inst.id), keep: [])
                network.detach(inst.id)
                try? FileManager.default.removeItem(atPath: dir(inst.id))
                try store.deleteInstance(id: inst.id)
                log.warning("rolled back an interrupted create", ["instance_id": inst.id])
                continue
            }
            let hasSnap = FileManager.default.fileExists(atPath: snapshotDir(inst.id) + "/.complete")
            // A stored pid counts only once proven to be this instance's VMM (else: gone, never signalled).
            let ownedPID = inst.vmmPID.flatMap { pid in Self.alive(pid) && verifyVMM(inst, pid: pid) != nil ? pid : nil }
            if let pid = ownedPID, let driver = try? table.driver(inst.hypervisor),
               let image = try? imageConfig(inst, store: store), let sp = try? spec(inst, image: image, net: nil),
               let vm = driver.attach(sp, pid: Int32(pid)) {
                setVM(inst.id, vm)
                logWatcher.watch(inst.id, logDir: logDir(inst.id), pid: Int32(pid))   // adopted VMs are rotated again
                if (try? vm.state()) == .paused {
                    // An interrupted standby: the snapshot may be partial; keep the VM running.
                    try? vm.resume()
                    try? FileManager.default.removeItem(atPath: snapshotDir(inst.id))
                    inst.hasSnapshot = false
                }
                inst.state = (try? vm.state()).map { s in
                    switch s {
                    case .created: .created
                    // A Running instance stays Running while its link reconnects; one that was
                    // still booting stays Initializing until its agent answers.
                    case .running: agentEnabled(inst) && inst.state != .running ? .initializing : .running
                    case .paused: .paused
                    case .shutdown: .shutdown
                    }
                } ?? .unknown
                if inst.state == .initializing || inst.state == .running { reconnectAgent(inst) }
                Self.killOrphans(in: dir(inst.id), keep: [Int32(pid)])
                log.info("adopted a running VMM", ["instance_id": inst.id, "pid": String(pid)])
            } else {
                if let pid = ownedPID {
                    inst.state = .unknown
                    inst.stateError = "VMM pid \(pid) is alive but cannot be attached"
                } else {
                    Self.killOrphans(in: dir(inst.id), keep: [])
                    network.detach(inst.id)
                    if !hasSnap { try? FileManager.default.removeItem(atPath: snapshotDir(inst.id)) }
                    inst.vmmPID = nil
                    inst.state = hasSnap ? .standby : .stopped
                    inst.hasSnapshot = hasSnap
                }
            }
            try store.updateInstanceRuntime(inst)
        }
        // Directories and VMM processes nobody owns.
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: config.guestsDir) {
            for e in entries where !known.contains(e) {
                Self.killOrphans(in: dir(e), keep: [])
                try? FileManager.default.removeItem(atPath: dir(e))
                log.warning("removed an orphan instance directory", ["dir": e])
            }
        }
    }

    /// TAP names of instances whose VMM is alive (kept by the network's orphan cleanup at start).
    public static func liveTAPs(store: Store) -> Set<String> {
        let insts = (try? store.listInstances()) ?? []
        return Set(insts.filter { inst in
                inst.networkEnabled && inst.vmmPID.map { alive($0) && ownsVMM(id: inst.id, pid: $0) } == true
            }
            .compactMap { try? Allocator.tapName(forInstanceID: $0.id) })
    }

    /// True when `pid`'s command line names a control socket inside a directory called `id` (the
    /// guests directory is not known here; used only to keep TAPs, never to signal).
    static func ownsVMM(id: String, pid: Int) -> Bool {
        guard pid > 1, pid <= Int(Int32.max), let args = ProcFacts.arguments(Int32(pid)) else { return false }
        return args.contains { $0.contains("/\(id)/" + QEMUArgs.qmpSocketName) || $0.contains("/\(id)/ch.sock") }
    }

    /// Kills VMM processes of the instance directory `dir` (their command line names one of its
    /// control sockets), except `keep`; each is signalled through a pidfd opened before its
    /// command line is read, so a pid reused in between is never hit.
    static func killOrphans(in dir: String, keep: Set<Int32>) {
        guard let procs = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        let me = getpid()
        let log = Log("prov.instances")
        for p in procs {
            guard let pid = Int32(p), pid > 1, pid != me, !keep.contains(pid),
                  let args = ProcFacts.arguments(pid), !args.isEmpty else { continue }
            let markers = vmmMarkers(dir: dir)
            guard let marker = markers.first(where: { m in args.contains { $0.contains(m) } }),
                  case .success(let h) = VMMProcessHandle.verify(pid: pid, marker: marker, record: nil) else { continue }
            log.warning("killing an orphan VMM", ["dir": dir, "pid": String(pid)])
            kill(h)
        }
    }
}
