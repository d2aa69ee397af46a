import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Before a stored or adopted pid is signalled it must be proven to still be the VMM we started:
// after a host reboot (or simply a long time) the number can belong to any process. The proof is
// three facts read from /proc — the command line carries the VM's marker (its control socket path,
// which names the instance's run directory), the start time (`/proc/<pid>/stat` field 22) and the
// boot id equal the ones recorded at spawn — and the signal then goes through a pidfd opened
// before the checks, so the process cannot be swapped between checking and signalling.

/// `/proc` facts about one process.
public enum ProcFacts {
    /// State letter and start time (clock ticks since boot, field 22) of `/proc/<pid>/stat`.
    public static func stat(_ pid: Int32) -> (state: Character, startTime: UInt64)? {
        guard pid > 0, let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        // "pid (comm) S ppid …": comm may hold spaces and parentheses, so fields count from the last ')'.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let st = fields[0].first, let start = UInt64(fields[19]) else { return nil }
        return (st, start)
    }

    /// The argv of `pid` (empty for a zombie or a kernel thread); nil when it cannot be read.
    public static func arguments(_ pid: Int32) -> [String]? {
        guard pid > 0, let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
        return data.split(separator: 0, omittingEmptySubsequences: false).dropLast(data.last == 0 ? 1 : 0)
            .map { String(decoding: $0, as: UTF8.self) }
    }

    /// This boot's id (`/proc/sys/kernel/random/boot_id`); a start time means nothing across boots.
    public static func bootID() -> String? {
        guard let data = FileManager.default.contents(atPath: "/proc/sys/kernel/random/boot_id") else { return nil }
        let s = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return s.isEmpty ? nil : s
    }
}

/// Who a VMM process was at spawn: written by the driver into the VM's run directory
/// (`vmm-process.json`) and compared before any later signal to a pid read back from storage.
public struct VMMProcessRecord: Codable, Sendable, Equatable {
    public static let fileName = "vmm-process.json"

    public var pid: Int32
    /// `/proc/<pid>/stat` field 22 at spawn.
    public var startTime: UInt64
    /// The boot the process was started in.
    public var bootID: String

    public init(pid: Int32, startTime: UInt64, bootID: String) {
        self.pid = pid; self.startTime = startTime; self.bootID = bootID
    }

    /// The record of a live process now; nil when /proc does not show it.
    public static func capture(pid: Int32) -> VMMProcessRecord? {
        guard let st = ProcFacts.stat(pid), let boot = ProcFacts.bootID() else { return nil }
        return VMMProcessRecord(pid: pid, startTime: st.startTime, bootID: boot)
    }

    /// Writes the record atomically into `runDir` (best effort: a missing record only weakens the check).
    public func write(runDir: String) {
        guard let data = try? JSONEncoder().encode(self) else { return }
        try? data.write(to: URL(fileURLWithPath: runDir + "/" + Self.fileName), options: .atomic)
    }

    /// The record in `runDir`, or nil when there is none (a VM started before records existed).
    public static func read(runDir: String) -> VMMProcessRecord? {
        guard let data = FileManager.default.contents(atPath: runDir + "/" + fileName) else { return nil }
        return try? JSONDecoder().decode(VMMProcessRecord.self, from: data)
    }

    /// Removes the record (the process is gone).
    public static func remove(runDir: String) { unlink(runDir + "/" + fileName) }
}

/// Why a pid was refused as a VM's VMM.
public enum VMMProcessMismatch: Error, Sendable, Equatable, CustomStringConvertible {
    case gone
    case zombie
    /// The command line does not carry the VM's marker (holds the first argument seen).
    case markerMissing(String)
    case startTimeDiffers(recorded: UInt64, actual: UInt64)
    case otherBoot
    case recordedForOtherPID(Int32)

    public var description: String {
        switch self {
        case .gone: return "no such process"
        case .zombie: return "the process has exited (zombie)"
        case .markerMissing(let a): return "its command line (\(a.isEmpty ? "empty" : a)) does not name this VM's control socket"
        case .startTimeDiffers(let r, let a): return "it started at tick \(a), the VMM recorded at spawn started at tick \(r)"
        case .otherBoot: return "the VMM was recorded in an earlier boot of this host"
        case .recordedForOtherPID(let p): return "the VMM recorded at spawn had pid \(p)"
        }
    }
}

/// A process proven to be a VM's VMM, held through a pidfd (`pidfd_open`, Linux ≥ 5.3) for as long
/// as the handle lives: signals go through `pidfd_send_signal`, which can never reach a later
/// process that reused the pid. Where the kernel or libc has no pidfd, signals fall back to
/// `kill(2)` after re-checking the start time.
public final class VMMProcessHandle: Sendable {
    public let pid: Int32
    /// `/proc/<pid>/stat` start time when the handle was made (nil when unreadable).
    public let startTime: UInt64?
    /// The pidfd, or -1.
    private let fd: Int32

    private init(pid: Int32, startTime: UInt64?, fd: Int32) {
        self.pid = pid; self.startTime = startTime; self.fd = fd
    }

    deinit { if fd >= 0 { _ = close(fd) } }

    /// True when signals go through a pidfd.
    public var usesPidfd: Bool { fd >= 0 }

    /// A child this process just spawned and has not reaped: its pid cannot have been reused.
    public static func child(_ pid: Int32) -> VMMProcessHandle {
        VMMProcessHandle(pid: pid, startTime: ProcFacts.stat(pid)?.startTime, fd: PidFD.open(pid))
    }

    /// Proves that `pid` is the VMM whose command line carries `marker` (an argument containing
    /// it) and, when `record` is given, the very process recorded at spawn (same pid, boot and
    /// start time). The pidfd is opened first and checked alive last, so the facts read in
    /// between belong to the process it holds.
    public static func verify(pid: Int32, marker: String, record: VMMProcessRecord?) -> Result<VMMProcessHandle, VMMProcessMismatch> {
        guard pid > 1, pid != getpid() else { return .failure(.gone) }
        let fd = PidFD.open(pid)
        var keep = false
        defer { if !keep && fd >= 0 { _ = close(fd) } }
        if fd < 0 && errno == ESRCH { return .failure(.gone) }
        guard let st = ProcFacts.stat(pid) else { return .failure(.gone) }
        if st.state == "Z" || st.state == "X" { return .failure(.zombie) }
        guard let args = ProcFacts.arguments(pid) else { return .failure(.gone) }
        guard !marker.isEmpty, args.contains(where: { $0.contains(marker) }) else {
            return .failure(.markerMissing(args.first ?? ""))
        }
        if let record {
            if record.pid != pid { return .failure(.recordedForOtherPID(record.pid)) }
            if let boot = ProcFacts.bootID(), boot != record.bootID { return .failure(.otherBoot) }
            if record.startTime != st.startTime { return .failure(.startTimeDiffers(recorded: record.startTime, actual: st.startTime)) }
        }
        let handle = VMMProcessHandle(pid: pid, startTime: st.startTime, fd: fd)
        keep = true
        guard handle.exists else { return .failure(.gone) }
        return .success(handle)
    }

    /// True while the held process has not been reaped (a zombie still counts: check `/proc` for that).
    public var exists: Bool {
        if fd >= 0 { return PidFD.sendSignal(fd, 0) == 0 || errno == EPERM }
        guard sysKill(pid, 0) == 0 || errno == EPERM else { return false }
        if let mine = startTime, let now = ProcFacts.stat(pid)?.startTime, now != mine { return false }
        return true
    }

    /// Sends `signal` to the held process; false when it is gone (nothing was signalled).
    @discardableResult
    public func send(_ signal: Int32) -> Bool {
        if fd >= 0 { return PidFD.sendSignal(fd, signal) == 0 }
        guard exists else { return false }
        return sysKill(pid, signal) == 0
    }
}

/// `kill(2)` under a name that the drivers' `kill()`/`signal(_:)` methods do not shadow.
public func sysKill(_ pid: pid_t, _ signal: Int32) -> Int32 {
    #if canImport(Glibc)
    return Glibc.kill(pid, signal)
    #else
    return Musl.kill(pid, signal)
    #endif
}

/// glibc ≥ 2.36 `pidfd_open`/`pidfd_send_signal`, looked up at run time (the Swift Glibc module
/// does not export them, and `syscall(2)` is variadic). -1 with `errno` = ENOSYS when absent.
enum PidFD {
    typealias OpenFn = @convention(c) (pid_t, UInt32) -> Int32
    typealias SendFn = @convention(c) (Int32, Int32, UnsafeMutableRawPointer?, UInt32) -> Int32

    nonisolated(unsafe) static let openFn: OpenFn? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pidfd_open")
        .map { unsafeBitCast($0, to: OpenFn.self) }
    nonisolated(unsafe) static let sendFn: SendFn? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pidfd_send_signal")
        .map { unsafeBitCast($0, to: SendFn.self) }

    /// A pidfd for `pid` (close-on-exec by default), or -1.
    static func open(_ pid: Int32) -> Int32 {
        guard let openFn, sendFn != nil else { errno = ENOSYS; return -1 }
        return openFn(pid, 0)
    }

    static func sendSignal(_ fd: Int32, _ signal: Int32) -> Int32 {
        guard let sendFn else { errno = ENOSYS; return -1 }
        return sendFn(fd, signal, nil, 0)
    }
}
