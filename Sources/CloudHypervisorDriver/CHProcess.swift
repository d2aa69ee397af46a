import Foundation
import Synchronization
import VMM
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One `cloud-hypervisor` process: spawn, readiness, liveness, and the teardown ladder.
///
/// Spawn: `<binary> --api-socket <socket> [extra…]` in a new session (setsid, so it outlives the
/// daemon and owns its process group), with a minimal environment, stdin from /dev/null,
/// stdout/stderr appended to the VMM log, and no other inherited descriptors. Before spawning it
/// refuses a socket that already accepts connections and unlinks a stale one (CH ≤ v52 cannot
/// bind over a leftover file). Ready = the socket accepts within a bounded time (10 ms polls).
/// Teardown ladder: `vmm.shutdown` → timed wait → SIGTERM → timed wait → SIGKILL → reap, then
/// the socket is removed if the process left it (SIGKILL does).
///
/// A spawned process is our child and is reaped with `waitpid`; an attached one (after a daemon
/// restart) is adopted only once proven to be this VM's VMM (its command line names the API
/// socket; the pid, start time and boot match the `VMMProcessRecord` written into the run
/// directory at spawn) and is then watched through its pidfd and `/proc`. Every signal goes
/// through the pidfd (`pidfd_send_signal`), and only while the process is known not to be
/// reaped, so a recycled pid is never signalled.
public final class CHProcess: Sendable {
    public let pid: Int32
    public let apiSocketPath: String
    /// True when this process spawned it (it can be reaped with `waitpid`).
    public let isChild: Bool
    /// The pidfd signals go through, held for the process's life.
    let handle: VMMProcessHandle
    private let exit: Mutex<ExitState>

    enum ExitState: Sendable, Equatable {
        case running
        /// Reaped by us: the raw wait status.
        case exited(Int32)
        /// Gone, status unknown (not our child, or reaped elsewhere).
        case gone
    }

    /// How `stop` ended the process.
    public enum StopOutcome: String, Sendable {
        case alreadyExited = "already-exited"
        case vmmShutdown = "vmm.shutdown"
        case sigterm = "SIGTERM"
        case sigkill = "SIGKILL"
        case unkillable = "unkillable"
    }

    /// Spawn options.
    public struct Options: Sendable {
        public var binaryPath: String
        /// Arguments after `--api-socket <path>` (for example `-v`).
        public var extraArguments: [String]
        /// Added to the minimal environment (`PATH`, `LANG`).
        public var environment: [String: String]
        /// Seconds to wait for the API socket to accept.
        public var readyTimeout: Double

        public init(binaryPath: String, extraArguments: [String] = [], environment: [String: String] = [:],
                    readyTimeout: Double = 5) {
            self.binaryPath = binaryPath; self.extraArguments = extraArguments
            self.environment = environment; self.readyTimeout = readyTimeout
        }
    }

    /// The environment every VMM starts from (nothing is inherited from the daemon).
    public static let minimalEnvironment: [String: String] = [
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
    ]

    init(handle: VMMProcessHandle, apiSocketPath: String, isChild: Bool) {
        self.pid = handle.pid; self.handle = handle; self.apiSocketPath = apiSocketPath; self.isChild = isChild
        self.exit = Mutex(.running)
    }

    /// Adopts a VMM this daemon did not spawn (or spawned before a restart), once proven to be the
    /// VMM of `apiSocketPath`: its command line carries that path and, when the socket's directory
    /// holds the record written at spawn, it is that very process (pid, start time, boot). A pid
    /// that fails is refused with the reason and must be treated as gone, never signalled.
    public static func adopt(pid: Int32, apiSocketPath: String) -> Result<CHProcess, VMMProcessMismatch> {
        let record = VMMProcessRecord.read(runDir: runDir(of: apiSocketPath))
        switch VMMProcessHandle.verify(pid: pid, marker: apiSocketPath, record: record) {
        case .failure(let why): return .failure(why)
        case .success(let handle): return .success(CHProcess(handle: handle, apiSocketPath: apiSocketPath, isChild: false))
        }
    }

    /// The run directory a VM's API socket sits in (where the spawn record is written).
    static func runDir(of apiSocketPath: String) -> String {
        guard let slash = apiSocketPath.lastIndex(of: "/") else { return "." }
        return slash == apiSocketPath.startIndex ? "/" : String(apiSocketPath[..<slash])
    }

    /// Starts the VMM and waits until its API socket accepts connections.
    public static func spawn(_ options: Options, apiSocketPath: String, logPath: String) throws(VMMError) -> CHProcess {
        guard apiSocketPath.utf8.count < SocketProbe.maxPathBytes else {
            throw .process("API socket path \(apiSocketPath) is longer than \(SocketProbe.maxPathBytes - 1) bytes; use a shorter run directory")
        }
        switch SocketProbe.probe(apiSocketPath) {
        case .accepting:
            throw .process("API socket \(apiSocketPath) already accepts connections: another VMM is using it")
        case .stale:
            guard unlink(apiSocketPath) == 0 || errno == ENOENT else {
                throw .process("cannot remove stale API socket \(apiSocketPath): \(String(cString: strerror(errno)))")
            }
        case .notSocket:
            throw .process("\(apiSocketPath) exists and is not a socket; refusing to remove it")
        case .absent:
            break
        }

        let logFD = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard logFD >= 0 else {
            throw .process("cannot open VMM log \(logPath): \(String(cString: strerror(errno)))")
        }
        defer { close(logFD) }

        var env = minimalEnvironment
        for (k, v) in options.environment { env[k] = v }
        let argv = [options.binaryPath, "--api-socket", apiSocketPath] + options.extraArguments
        let envp = env.keys.sorted().map { "\($0)=\(env[$0] ?? "")" }
        let pid = try Spawner.spawn(path: options.binaryPath, argv: argv, envp: envp, outputFD: logFD)
        // Our unreaped child: its pid cannot have been reused yet. Who it is goes beside the socket.
        let process = CHProcess(handle: .child(pid), apiSocketPath: apiSocketPath, isChild: true)
        VMMProcessRecord.capture(pid: pid)?.write(runDir: runDir(of: apiSocketPath))

        let deadline = Deadline(seconds: options.readyTimeout)
        while true {
            if SocketProbe.probe(apiSocketPath) == .accepting { return process }
            if !process.isRunning {
                let status = process.exitDescription
                process.removeStaleSocket()
                throw .process("\(options.binaryPath) exited during start-up (\(status)); see \(logPath)\(lastLine(of: logPath))")
            }
            if deadline.passed {
                process.kill()
                throw .timeout("\(options.binaryPath) did not accept on \(apiSocketPath) within \(options.readyTimeout) s; see \(logPath)")
            }
            usleep(10_000)
        }
    }

    /// True while the process exists (reaps it when it has exited).
    public var isRunning: Bool {
        exit.withLock { state in
            Self.refresh(&state, pid: pid, isChild: isChild, handle: handle)
            return state == .running
        }
    }

    /// The wait status once reaped by us (nil while running or when unknown).
    public var exitStatus: Int32? {
        exit.withLock { state in
            if case .exited(let status) = state { return status }
            return nil
        }
    }

    var exitDescription: String {
        guard let status = exitStatus else { return "status unknown" }
        let s = Int32(status)
        if s & 0x7f == 0 { return "exit code \((s >> 8) & 0xff)" }
        return "killed by signal \(s & 0x7f)"
    }

    /// Polls until the process is gone or `timeout` seconds pass; true when it is gone.
    @discardableResult
    public func waitForExit(timeout: Double) -> Bool {
        let deadline = Deadline(seconds: timeout)
        while isRunning {
            if deadline.passed { return false }
            usleep(10_000)
        }
        return true
    }

    /// Sends `signal` to the VMM through its pidfd and, while that process (proven alive through
    /// the pidfd a moment before) leads its own group, to the group (its session, since it was
    /// started with setsid). Never signals a reaped pid or a process that reused it.
    public func signal(_ signal: Int32) {
        exit.withLock { state in
            Self.refresh(&state, pid: pid, isChild: isChild, handle: handle)
            guard state == .running, handle.exists else { return }
            if getpgid(pid) == pid { _ = sysKill(-pid, signal) }
            handle.send(signal)
        }
    }

    /// The teardown ladder: `vmm.shutdown` (when a client is given) → wait `shutdownWait` →
    /// SIGTERM → wait `termWait` → SIGKILL → wait `killWait`; then removes a left-over socket.
    @discardableResult
    public func stop(client: CHClient?, shutdownWait: Double = 2, termWait: Double = 2, killWait: Double = 5) -> StopOutcome {
        defer { removeStaleSocket() }
        guard isRunning else { return .alreadyExited }
        if let client {
            var quick = client
            quick.timeout = min(client.timeout, max(1, shutdownWait))
            if (try? quick.shutdownVMM()) != nil, waitForExit(timeout: shutdownWait) { return .vmmShutdown }
            if waitForExit(timeout: 0) { return .vmmShutdown }
        }
        signal(SIGTERM)
        if waitForExit(timeout: termWait) { return .sigterm }
        signal(SIGKILL)
        if waitForExit(timeout: killWait) { return .sigkill }
        return .unkillable
    }

    /// SIGKILL, reap (bounded), remove the socket it leaves behind. Never fails.
    public func kill() {
        signal(SIGKILL)
        waitForExit(timeout: 5)
        removeStaleSocket()
    }

    /// Removes the API socket when the process is gone and nothing accepts on it.
    public func removeStaleSocket() {
        guard !isRunning else { return }
        if SocketProbe.probe(apiSocketPath) == .stale { _ = unlink(apiSocketPath) }
        let dir = Self.runDir(of: apiSocketPath)
        if VMMProcessRecord.read(runDir: dir)?.pid == pid { VMMProcessRecord.remove(runDir: dir) }
    }

    private static func refresh(_ state: inout ExitState, pid: Int32, isChild: Bool, handle: VMMProcessHandle) {
        guard state == .running else { return }
        // Reap it if it is our child (also when attached: the daemon may re-attach to its own child).
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { state = .exited(status); return }
            if r == 0 { return }
            if errno == EINTR { continue }
            break   // ECHILD: not our child, or reaped elsewhere
        }
        if isChild { state = .gone; return }
        if !handle.exists { state = .gone; return }
        if isZombie(pid) { state = .gone }
    }

    private static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let rest = stat[stat.index(after: close)...].drop(while: { $0 == " " })
        return rest.first == "Z" || rest.first == "X"
    }
}

private func lastLine(of path: String) -> String {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "" }
    let lines = text.split(separator: "\n").suffix(3)
    return lines.isEmpty ? "" : ": " + lines.joined(separator: " | ")
}

/// A monotonic deadline.
struct Deadline {
    let end: ContinuousClock.Instant
    init(seconds: Double) { end = ContinuousClock.now.advanced(by: .milliseconds(Int64(max(0, seconds) * 1000))) }
    var passed: Bool { ContinuousClock.now >= end }
}
