import Foundation
import Model
#if canImport(Glibc)
import Glibc
#endif

/// Keeps the VMM-written guest logs (`app.log`, `vmm.log`) of every running VM under
/// `LOG_MAX_BYTES`: one thread for all VMs, woken by inotify when a file in a watched log
/// directory is written, rotates (copy-truncate, see `LogRotation`) a file as soon as it reaches
/// `rotateAt` — half the cap, so a guest flooding its console between two checks does not take
/// the file past the cap. A periodic pass backs inotify up.
public final class GuestLogWatcher: @unchecked Sendable {
    public let limits: GuestLogLimits
    /// The longest the thread sleeps without an event (the backstop pass).
    let idleMillis: Int32 = 500
    /// After a wake-up the thread waits this long so a busy writer's events coalesce.
    let coalesceMicros: UInt32 = 2_000
    let log = Log("prov.logs")
    let lock = NSLock()
    var dirs: [String: String] = [:]         // instance id → log directory, guarded by `lock`
    var watches: [String: Int32] = [:]       // instance id → inotify watch, guarded by `lock`
    var started = false                      // guarded by `lock`
    var rotationCount = 0                    // guarded by `lock`
    let inotifyFD: Int32

    public init(limits: GuestLogLimits) {
        self.limits = limits
        inotifyFD = inotify_init1(Int32(O_CLOEXEC | O_NONBLOCK))
    }

    /// Rotations done so far (all instances).
    public var rotations: Int { lock.lock(); defer { lock.unlock() }; return rotationCount }

    /// The instances being watched.
    public var watched: Set<String> { lock.lock(); defer { lock.unlock() }; return Set(dirs.keys) }

    /// Starts watching an instance's log directory (idempotent); starts the thread on first use.
    /// With the VMM's `pid`, its descriptors on the log files are made append-only first (see
    /// `AppendMode`), so copy-truncate works whatever flags the VMM opened them with.
    public func watch(_ id: String, logDir: String, pid: Int32? = nil) {
        if let pid {
            let files = GuestLogSource.allCases.filter(\.writtenByVMM).map { GuestLogFiles.live($0, in: logDir) }
            do { try AppendMode.ensure(pid: pid, paths: files) } catch {
                log.warning("cannot make the VMM's log descriptors append-only; rotation leaves sparse files",
                            ["instance_id": id, "pid": String(pid), "error": "\(error)"])
            }
        }
        lock.lock()
        if let wd = watches.removeValue(forKey: id) { inotify_rm_watch(inotifyFD, wd) }
        dirs[id] = logDir
        if inotifyFD >= 0 {
            let wd = inotify_add_watch(inotifyFD, logDir, UInt32(IN_MODIFY))
            if wd >= 0 { watches[id] = wd }
        }
        let start = !started
        started = true
        lock.unlock()
        _ = check(id)   // a file that grew while nobody watched (an adopted VM) is rotated now
        if start {
            let t = Thread { [self] in run() }
            t.name = "guest-log-watcher"
            t.start()
        }
    }

    /// Stops watching an instance (its VMM is gone).
    public func unwatch(_ id: String) {
        lock.lock(); defer { lock.unlock() }
        dirs[id] = nil
        if let wd = watches.removeValue(forKey: id) { inotify_rm_watch(inotifyFD, wd) }
    }

    /// Rotates the due files of one instance; returns how many were rotated.
    @discardableResult
    public func check(_ id: String) -> Int {
        lock.lock()
        let dir = dirs[id]
        lock.unlock()
        guard let dir else { return 0 }
        var n = 0
        for source in GuestLogSource.allCases where source.writtenByVMM {
            guard let size = LogRotation.size(GuestLogFiles.live(source, in: dir)), size >= limits.rotateAt else { continue }
            do {
                try LogRotation.copyTruncate(source, in: dir, files: limits.files, keepAtMost: limits.maxBytes)
                n += 1
                if size > limits.maxBytes {
                    log.warning("guest log passed its cap before rotation", ["instance_id": id, "source": source.rawValue,
                                                                              "size": String(size)])
                }
            } catch {
                log.error("guest log rotation failed", ["instance_id": id, "source": source.rawValue, "error": "\(error)"])
            }
        }
        if n > 0 { lock.lock(); rotationCount += n; lock.unlock() }
        return n
    }

    /// Rotates the due files of every watched instance; returns how many were rotated.
    @discardableResult
    public func checkAll() -> Int {
        var n = 0
        for id in watched { n += check(id) }
        return n
    }

    func run() {
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            var pfd = pollfd(fd: inotifyFD, events: Int16(POLLIN), revents: 0)
            let r = inotifyFD >= 0 ? poll(&pfd, 1, idleMillis) : { usleep(UInt32(idleMillis) * 1000); return 0 }()
            if r > 0 {
                // Let a busy writer's events pile up (inotify merges them), then drain them all.
                usleep(coalesceMicros)
                while buf.withUnsafeMutableBytes({ read(inotifyFD, $0.baseAddress!, $0.count) }) > 0 {}
            }
            checkAll()
        }
    }
}
