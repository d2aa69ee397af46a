import Foundation
import Glibc
import Synchronization
import VMM

/// Measured durations of one VM's start-up, for logs and benchmarks.
public final class QEMUTimings: Sendable {
    private struct Values { var spawnToQMP: Duration?; var restoreLoad: Duration?; var lastSnapshot: Duration? }
    private let values: Mutex<Values>

    init(spawnToQMP: Duration?) { values = Mutex(Values(spawnToQMP: spawnToQMP)) }

    /// `posix_spawn` until the QMP greeting and `qmp_capabilities` completed (nil after attach).
    public var spawnToQMP: Duration? { values.withLock { $0.spawnToQMP } }
    /// `migrate-incoming` until the load finished (restores only).
    public var restoreLoad: Duration? { values.withLock { $0.restoreLoad } }
    /// `migrate` until `completed` and the file synced, for the latest snapshot.
    public var lastSnapshot: Duration? { values.withLock { $0.lastSnapshot } }

    func set(restoreLoad d: Duration) { values.withLock { $0.restoreLoad = d } }
    func set(lastSnapshot d: Duration) { values.withLock { $0.lastSnapshot = d } }
}

/// A running QEMU VM: its process, its QMP connection (re-opened on demand while the process
/// lives) and its device layout. Every method maps to QMP commands named in its comment.
public final class QEMUVM: RunningVM, Sendable {
    /// Snapshot directory content written by `snapshot(to:)`: the migration stream.
    public static let memoryFileName = "memory"
    static let snapshotFDName = "hm-snapshot"
    static let restoreFDName = "hm-restore"

    public let spec: VMSpec
    public let process: QEMUProcess
    public let timings: QEMUTimings
    let timeouts: QEMUTimeouts
    private let client: Mutex<QMPClient?>
    private let layoutState: Mutex<QEMULayout>
    /// Size of the VMM log before this process started (for error excerpts); nil after attach.
    private let logOffset: Int?

    init(spec: VMSpec, layout: QEMULayout, process: QEMUProcess, client: QMPClient, timeouts: QEMUTimeouts,
         logOffset: Int?, spawnToQMP: Duration?) {
        self.spec = spec
        self.process = process
        self.timeouts = timeouts
        self.client = Mutex(client)
        self.layoutState = Mutex(layout)
        self.logOffset = logOffset
        self.timings = QEMUTimings(spawnToQMP: spawnToQMP)
    }

    public var pid: Int32 { process.pid }

    /// The current device layout (disk id → root port).
    public var layout: QEMULayout { layoutState.withLock { $0 } }

    /// The QMP client, reconnecting when the previous connection dropped and QEMU still runs.
    public func qmp() throws(VMMError) -> QMPClient {
        try client.withLock { (c: inout QMPClient?) throws(VMMError) -> QMPClient in
            if let c, c.isConnected { return c }
            guard process.isAlive() else { throw .process("QEMU (pid \(pid)) has exited") }
            let fresh = try QMPClient.connect(path: QEMUArgs.qmpSocketPath(spec), timeout: timeouts.qmpReady)
            c = fresh
            return fresh
        }
    }

    @discardableResult
    func run(_ command: String, _ arguments: QMPJSON? = nil, timeout: Duration? = nil) throws(VMMError) -> QMPJSON {
        try qmp().execute(command, arguments, timeout: timeout ?? timeouts.command)
    }

    /// QMP `query-status` → `status` (e.g. `running`, `paused`, `postmigrate`).
    public func runStatus() throws(VMMError) -> String {
        let r = try run("query-status")
        guard let s = r["status"]?.stringValue else { throw .decoding("query-status: \(r.jsonText)") }
        return s
    }

    /// Maps a QMP run state onto `VMRunState`.
    public static func runState(forQMPStatus s: String) -> VMRunState {
        switch s {
        case "running": return .running
        case "shutdown", "guest-panicked", "internal-error": return .shutdown
        default: return .paused  // paused, prelaunch, inmigrate, postmigrate, finish-migrate, suspended, io-error, …
        }
    }

    /// QMP `query-status`; `Shutdown` once the process has exited.
    public func state() throws(VMMError) -> VMRunState {
        guard process.isAlive() else { return .shutdown }
        do {
            return QEMUVM.runState(forQMPStatus: try runStatus())
        } catch {
            if !process.isAlive() { return .shutdown }
            throw error
        }
    }

    /// QMP `stop` (a `STOP` event; status `paused`).
    public func pause() throws(VMMError) { try run("stop") }

    /// QMP `cont` (a `RESUME` event; status `running`); also leaves `postmigrate` after a snapshot.
    /// A snapshot cut short (the Provisioner killed during standby) can leave its migration
    /// running, and QEMU keeps the VM paused until it ends: it is cancelled first.
    public func resume() throws(VMMError) {
        let unfinished: Set<String> = ["setup", "active", "pre-switchover", "device", "wait-unplug", "cancelling"]
        if let status = (try? run("query-migrate"))?["status"]?.stringValue, unfinished.contains(status) {
            _ = try? run("migrate_cancel")
            let deadline = ContinuousClock.now + timeouts.command
            while ContinuousClock.now < deadline,
                  let s = (try? run("query-migrate"))?["status"]?.stringValue, unfinished.contains(s) {
                Thread.sleep(forTimeInterval: 0.01)
            }
        }
        try run("cont")
    }

    /// While paused: QMP `getfd` (a descriptor of `<dir>/memory.partial`, opened here) + `migrate
    /// fd:…`, polling `query-migrate` until `completed`; then the file is fsynced, renamed to
    /// `<dir>/memory` and the device layout written beside it (`qemu-layout.json`, read back by restore). QEMU then sits in `postmigrate`;
    /// `resume` continues the VM. QEMU 7.2 refuses a second snapshot before the VM ran again.
    /// (7.2 has no `file:` URI; `exec:cat > …` works but 7.2 SIGTERMs the helper the moment it
    /// closes the pipe, which can cut the file short.)
    public func snapshot(to dir: String) throws(VMMError) {
        let status = try runStatus()
        if status == "postmigrate" {
            throw .status(409, "snapshot right after a snapshot: resume the VM first (QEMU cannot migrate twice in a row)")
        }
        guard status == "paused" || status == "prelaunch" else {
            throw .status(409, "snapshot needs a paused VM; QEMU status is \(status)")
        }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw .process("cannot create snapshot directory \(dir): \(error)")
        }
        // Written as `memory.partial` and renamed once complete and synced: `memory` exists only whole.
        let path = dir + "/" + QEMUVM.memoryFileName
        let partial = path + ".partial"
        let fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .process("cannot create \(partial): \(errnoText())") }
        var done = false
        defer {
            _ = close(fd)
            if !done { unlink(partial) }
        }
        let began = ContinuousClock.now
        let q = try qmp()
        // The default cap (32 MiB/s) would throttle a local file copy.
        try q.execute("migrate-set-parameters", ["max-bandwidth": .int(1 << 40)], timeout: timeouts.command)
        try q.execute("getfd", ["fdname": .string(QEMUVM.snapshotFDName)], passing: fd, timeout: timeouts.command)
        try q.execute("migrate", ["uri": .string("fd:" + QEMUVM.snapshotFDName)], timeout: timeouts.command)
        let deadline = ContinuousClock.now + timeouts.migration
        while true {
            let m = try q.execute("query-migrate", timeout: timeouts.command)
            switch m["status"]?.stringValue ?? "none" {
            case "completed":
                guard fsync(fd) == 0 else { throw .process("fsync \(partial): \(errnoText())") }
                guard rename(partial, path) == 0 else { throw .process("rename \(partial): \(errnoText())") }
                done = true
                let dirFD = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                if dirFD >= 0 { _ = fsync(dirFD); _ = close(dirFD) }
                try layout.write(to: dir + "/" + QEMULayout.fileName)
                timings.set(lastSnapshot: began.duration(to: .now))
                return
            case "failed", "cancelled":
                throw .status(500, "migration to \(path) \(m["status"]?.stringValue ?? ""): \(m["error-desc"]?.stringValue ?? m.jsonText)")
            default:
                if ContinuousClock.now >= deadline {
                    _ = try? q.execute("migrate_cancel", timeout: timeouts.command)
                    throw .timeout("snapshot to \(path) after \(timeouts.migration)")
                }
                Thread.sleep(forTimeInterval: 0.005)
            }
        }
    }

    /// QMP `qom-set <virtio-mem> requested-size = bytes − base`, rounded up to the device's
    /// `block-size` (`qom-get`). The guest plugs or unplugs blocks on its own afterwards
    /// (`MEMORY_DEVICE_SIZE_CHANGE` events; `query-memory-size-summary`).
    public func resizeMemory(to bytes: Int64) throws(VMMError) {
        let hotplug = QEMUArgs.hotplugBytes(spec, machine: layout.machine)
        guard hotplug > 0 else {
            throw .unsupported(layout.machine == .q35 ? "memory resize: this VM has no hot-pluggable memory"
                                                       : "memory resize on the microvm machine")
        }
        let base = spec.memoryBytes
        guard bytes >= base, bytes <= base + hotplug else {
            throw .unsupported("memory size \(bytes): this VM can be sized from \(base) to \(base + hotplug) bytes")
        }
        let block = (try? run("qom-get", ["path": .string(QEMUArgs.virtioMemID), "property": "block-size"]))?.int64Value
            ?? QEMUArgs.virtioMemBlock
        var requested = bytes - base
        if block > 0, requested % block != 0 { requested = min(hotplug, (requested / block + 1) * block) }
        try run("qom-set", ["path": .string(QEMUArgs.virtioMemID), "property": "requested-size", "value": .int(requested)])
    }

    /// QMP `query-memory-size-summary`: (`base-memory`, `plugged-memory`) in bytes.
    public func memorySummary() throws(VMMError) -> (base: Int64, plugged: Int64) {
        let r = try run("query-memory-size-summary")
        guard let b = r["base-memory"]?.int64Value else { throw .decoding("query-memory-size-summary: \(r.jsonText)") }
        return (b, r["plugged-memory"]?.int64Value ?? 0)
    }

    /// QMP `system_powerdown` (ACPI power button; only when running), up to `grace` seconds for the
    /// guest to power off (QEMU exits: `-no-shutdown` is not used), then the ladder QMP `quit` →
    /// SIGTERM → SIGKILL; the process is reaped or gone on return.
    public func shutdown(grace: Double) throws(VMMError) {
        defer { cleanupFiles() }
        guard process.isAlive() else { closeClient(); return }
        if grace > 0, (try? runStatus()) == "running" {
            _ = try? run("system_powerdown")
            if process.waitForExit(timeout: .milliseconds(Int64(grace * 1000))) { closeClient(); return }
        }
        let c = try? qmp()
        process.stop(qmp: c, quitWait: timeouts.quit, termWait: timeouts.term)
        closeClient()
        if process.isAlive() { throw .process("QEMU (pid \(pid)) survived SIGKILL") }
    }

    /// SIGKILL and reap.
    public func kill() {
        process.killHard()
        closeClient()
        cleanupFiles()
    }

    /// QMP `blockdev-add` (file node, then raw node; read-only honoured) + `device_add
    /// virtio-blk-pci` on the lowest free root port, with the disk id as device id.
    public func addDisk(_ disk: DiskSpec) throws(VMMError) {
        guard layout.machine == .q35 else { throw .unsupported("disk hot-plug on the microvm machine (virtio-mmio)") }
        let port: Int = try layoutState.withLock { (l: inout QEMULayout) throws(VMMError) -> Int in
            if l.slots[disk.id] != nil { throw .status(409, "disk \(disk.id) is already attached") }
            guard let p = l.freePort() else {
                throw .unsupported("no free PCIe root port for disk \(disk.id) (launched with \(l.ports); raise spareHotplugPorts)")
            }
            l.slots[disk.id] = p  // reserved; released below on failure
            return p
        }
        var added: [String] = []
        do throws(VMMError) {
            try run("blockdev-add", QEMUArgs.fileNodeArguments(disk))
            added.append(QEMUArgs.fileNodeName(disk.id))
            try run("blockdev-add", QEMUArgs.formatNodeArguments(disk))
            added.append(QEMUArgs.formatNodeName(disk.id))
            try run("device_add", QEMUArgs.deviceArguments(disk, port: port))
        } catch {
            for node in added.reversed() { _ = try? run("blockdev-del", ["node-name": .string(node)]) }
            layoutState.withLock { l in if l.slots[disk.id] == port { l.slots[disk.id] = nil } }
            throw error
        }
        try saveLayout()
    }

    /// QMP `device_del`, then waits for `DEVICE_DELETED` of that device (the guest must release it;
    /// a paused VM never does), then `blockdev-del` of the raw and file nodes.
    public func removeDisk(id: String) throws(VMMError) {
        guard layout.machine == .q35 else { throw .unsupported("disk hot-unplug on the microvm machine (virtio-mmio)") }
        guard layout.slots[id] != nil else { throw .status(404, "no disk \(id) is attached") }
        let dev = QEMUArgs.deviceID(id)
        let q = try qmp()
        try q.execute("device_del", ["id": .string(dev)], timeout: timeouts.command)
        _ = try q.waitForEvent(timeout: timeouts.deviceRemoval) { ev in
            ev.name == "DEVICE_DELETED" && ev.data["device"]?.stringValue == dev
        }
        try q.execute("blockdev-del", ["node-name": .string(QEMUArgs.formatNodeName(id))], timeout: timeouts.command)
        try q.execute("blockdev-del", ["node-name": .string(QEMUArgs.fileNodeName(id))], timeout: timeouts.command)
        layoutState.withLock { l in l.slots[id] = nil }
        try saveLayout()
    }

    // MARK: - Helpers

    private func saveLayout() throws(VMMError) {
        try layout.write(to: spec.runDir + "/" + QEMULayout.fileName)
    }

    private func closeClient() {
        client.withLock { c in
            c?.close()
            c = nil
        }
    }

    /// The QMP socket and pid file of a process that is gone (QEMU removes them on a clean exit only).
    private func cleanupFiles() {
        guard !process.isAlive() else { return }
        unlink(QEMUArgs.qmpSocketPath(spec))
        unlink(QEMUArgs.pidFilePath(spec))
        if VMMProcessRecord.read(runDir: spec.runDir)?.pid == pid { VMMProcessRecord.remove(runDir: spec.runDir) }
    }

    /// What this process wrote to the VMM log so far (the tail), for error messages.
    func logSinceStart() -> String { QEMUVM.logTail(spec.vmmLogPath, from: logOffset ?? 0) }

    static func logTail(_ path: String, from offset: Int, limit: Int = 2048) -> String {
        guard let data = FileManager.default.contents(atPath: path), data.count > offset else { return "(no VMM output)" }
        let slice = data[(data.startIndex + max(offset, data.count - limit))...]
        return String(decoding: slice, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
