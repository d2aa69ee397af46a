import Foundation
import Glibc
import Synchronization
import VMM

/// One QEMU process: spawned in its own session (it outlives a Provisioner restart and gets no
/// signal meant for the Provisioner's process group) or adopted by pid after such a restart.
/// Knows whether it still lives and stops it with the ladder QMP `quit` → SIGTERM → SIGKILL, reaping
/// it when it is our child.
public final class QEMUProcess: Sendable {
    public let pid: Int32
    /// `/proc/<pid>/stat` start time (clock ticks since boot), to tell our process from a later one
    /// that reused the pid; nil when unreadable.
    let startTime: UInt64?
    /// The pidfd every signal goes through (`pidfd_send_signal`), held for the process's life.
    let handle: VMMProcessHandle
    private let exited: Mutex<Bool>

    init(handle: VMMProcessHandle) {
        self.pid = handle.pid
        self.startTime = handle.startTime
        self.handle = handle
        self.exited = Mutex(false)
    }

    /// The allow-listed environment a VMM runs with.
    public static let environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"]

    /// glibc's `POSIX_SPAWN_SETSID` (0x80, stable ABI; the Swift Glibc module hides `__USE_GNU` names).
    static let spawnSetSID: Int16 = 0x80

    /// Starts `binary argv…` as a session leader: stdin `/dev/null`, stdout and stderr appended to
    /// `logPath`, the minimal environment, default signal dispositions and an empty signal mask
    /// (the Provisioner blocks SIGTERM for its own `sigwait`; QEMU must not inherit that).
    /// With `runDir`, who the process is (pid, start time, boot) is recorded there
    /// (`VMMProcessRecord`) so that a later `adopt` can prove a stored pid is still this VMM.
    public static func spawn(binary: String, arguments: [String], logPath: String,
                             runDir: String? = nil) throws(VMMError) -> QEMUProcess {
        var fa = posix_spawn_file_actions_t()
        var attr = posix_spawnattr_t()
        posix_spawn_file_actions_init(&fa)
        posix_spawnattr_init(&attr)
        defer {
            posix_spawn_file_actions_destroy(&fa)
            posix_spawnattr_destroy(&attr)
        }
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fa, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o640)
        posix_spawn_file_actions_adddup2(&fa, 1, 2)
        closeInheritedDescriptors(&fa)

        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, spawnSetSID | Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = [binary] + arguments
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var cEnv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, binary, &fa, &attr, &cArgs, &cEnv)
        guard rc == 0 else { throw .process("cannot start \(binary): \(errnoText(rc))") }
        // Our unreaped child: its pid cannot have been reused yet.
        let handle = VMMProcessHandle.child(pid)
        if let runDir { VMMProcessRecord.capture(pid: pid)?.write(runDir: runDir) }
        return QEMUProcess(handle: handle)
    }

    /// Adopts a process started earlier (possibly by a previous Provisioner). Nil when `pid` is not
    /// alive, its command line does not contain `marker` (the VM's QMP socket path) or, when
    /// `runDir` holds the record written at spawn, it is not that very process (start time, boot):
    /// a reused pid is never mistaken for the VM, and so never signalled.
    public static func adopt(pid: Int32, marker: String, runDir: String? = nil) -> QEMUProcess? {
        try? check(pid: pid, marker: marker, runDir: runDir).get()
    }

    /// `adopt` with the reason for a refusal.
    public static func check(pid: Int32, marker: String, runDir: String?) -> Result<QEMUProcess, VMMProcessMismatch> {
        let record = runDir.flatMap { VMMProcessRecord.read(runDir: $0) }
        switch VMMProcessHandle.verify(pid: pid, marker: marker, record: record) {
        case .failure(let why): return .failure(why)
        case .success(let handle):
            let p = QEMUProcess(handle: handle)
            return p.isAlive() ? .success(p) : .failure(.gone)
        }
    }

    /// True while the process runs. Reaps it (`waitpid`) when it is our child; otherwise checks
    /// `kill(pid, 0)`, zombie state and the start time.
    public func isAlive() -> Bool {
        exited.withLock { done in
            if done { return false }
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { done = true; return false }
            if r == 0 { return true }
            // ECHILD: not our child (adopted after a restart), or reaped elsewhere.
            if !handle.exists { done = true; return false }
            guard let stat = QEMUProcess.procStat(pid) else { done = true; return false }
            if stat.state == "Z" || stat.state == "X" { done = true; return false }
            if let mine = startTime, stat.startTime != mine { done = true; return false }
            return true
        }
    }

    /// Polls until the process has exited or `timeout` passes; true when it exited.
    @discardableResult
    public func waitForExit(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        var pause = Duration.milliseconds(2)
        while isAlive() {
            if ContinuousClock.now >= deadline { return false }
            Thread.sleep(forTimeInterval: pause.seconds)
            pause = min(pause * 2, .milliseconds(50))
        }
        return true
    }

    /// Sends `signal` through the pidfd unless the process is known to be gone.
    public func send(_ signal: Int32) {
        guard isAlive() else { return }
        handle.send(signal)
    }

    /// The teardown ladder: QMP `quit` (when a client is given) and up to `quitWait`, then SIGTERM
    /// and up to `termWait`, then SIGKILL; returns once the process is gone (reaped if ours).
    public func stop(qmp: QMPClient?, quitWait: Duration, termWait: Duration) {
        if let qmp, isAlive() {
            _ = try? qmp.execute("quit", timeout: quitWait)
            qmp.close()
            if waitForExit(timeout: quitWait) { return }
        }
        send(SIGTERM)
        if waitForExit(timeout: termWait) { return }
        killHard()
    }

    /// SIGKILL, then wait (bounded at 10 s; a process in uninterruptible sleep can outlast that).
    public func killHard() {
        send(SIGKILL)
        waitForExit(timeout: .seconds(10))
    }

    // MARK: - /proc

    struct Stat { var state: Character; var startTime: UInt64 }

    static func procStat(_ pid: Int32) -> Stat? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        // "pid (comm) S ppid … starttime(22nd field) …"; comm may hold spaces and parentheses.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let st = fields[0].first, let start = UInt64(fields[19]) else { return nil }
        return Stat(state: st, startTime: start)
    }

    static func procStartTime(_ pid: Int32) -> UInt64? { procStat(pid)?.startTime }

    /// Closes every descriptor above 2 in the child (glibc ≥ 2.34 `posix_spawn_file_actions_addclosefrom_np`,
    /// looked up at run time because the Swift Glibc module does not export it). Descriptors the
    /// Provisioner opened without `O_CLOEXEC` must not leak into a long-lived VMM.
    private static func closeInheritedDescriptors(_ fa: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return }
        let fn = unsafeBitCast(sym, to: CloseFrom.self)
        _ = fn(&fa, 3)
    }
}
