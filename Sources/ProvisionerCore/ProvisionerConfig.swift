import Foundation
import Model
import GuestBoot

/// Settings of the Provisioner, read from the environment (see systemd/hypeman.env.example).
public struct ProvisionerConfig: Sendable {
    public var dataDir: String
    public var dbPath: String
    public var runDir: String
    /// Image builds running at once (MAX_CONCURRENT_BUILDS, default 1).
    public var maxConcurrentBuilds: Int
    /// Instance/volume jobs running at once (PROVISIONER_WORKERS, default 4).
    public var workers: Int
    /// Registries reachable over plain HTTP (INSECURE_REGISTRIES, comma separated host:port).
    public var insecureRegistries: [String]
    /// Docker-style credentials file (REGISTRY_AUTH_FILE), if any.
    public var registryAuthFile: String?
    /// Fallback poll period when no wake-up arrives (seconds).
    public var pollSeconds: Double
    /// HYPERVISOR: auto (Cloud Hypervisor if found, else QEMU), qemu or cloud-hypervisor.
    public var hypervisor: String
    /// QEMU_ACCEL: kvm on real hosts, tcg where KVM cannot run stock kernels.
    public var qemuAccel: String
    /// QEMU_BINARY / CLOUD_HYPERVISOR_BINARY.
    public var qemuBinary: String
    public var cloudHypervisorBinary: String
    /// HYPEMAN_KERNEL_DIR: prepared by scripts/setup-guest-kernel.sh (default DATA_DIR/system/kernel).
    public var kernelDir: String
    /// Kernel command line of every guest.
    public var guestCmdline: String
    /// STOP_GRACE_SECONDS: how long stop waits for a graceful power-off before stopping hard.
    public var stopGraceSeconds: Double

    /// HYPEMAN_AGENT_BINARY: the static guest agent put into every initramfs (default:
    /// `hypeman-agent` beside this executable). nil when absent: guests then boot without exec,
    /// live volumes or readiness, and the Provisioner says so at start.
    public var agentBinary: String?
    /// AGENT_READY_TIMEOUT: how long create and start wait for the guest agent's hello before
    /// answering with the instance still `Initializing` (it turns `Running` when the agent answers).
    public var agentReadyTimeout: Double = 60
    /// EXEC_SOCKET: the Unix socket nginx proxies `GET /instances/{id}/exec` WebSockets to.
    public var execSocket: String { execSocketOverride ?? runDir + "/exec.sock" }
    public var execSocketOverride: String?

    public var wakeSocket: String { runDir + "/provisioner.wake" }

    /// MAX_IMAGE_SIZE: the largest image accepted, for its compressed layers (each and together)
    /// and for what they unpack to (default 32 GiB). Sizes a registry or an archive declares
    /// beyond it fail the image.
    public var maxImageBytes: Int64 = 32 << 30
    /// JOB_MAX_ATTEMPTS: how often a job or build interrupted by a Provisioner crash is started
    /// again; past it the job fails with an error on its resource (default 3).
    public var jobMaxAttempts: Int = 3
    /// JOB_RETRY_BACKOFF_SECONDS: the wait before a re-queued job may run again; doubled per
    /// attempt, at most 64 times this (default 5).
    public var jobRetryBackoffSeconds: Double = 5
    /// HYPEMAN_UPLOAD_DIR: where the FastCGI side stages volume archives (default DATA_DIR/uploads).
    public var uploadDir: String?
    /// UPLOAD_MAX_AGE_SECONDS: staged uploads untouched this long and referenced by no pending job
    /// are removed at start and every `uploadSweepSeconds` (default 3600).
    public var uploadMaxAgeSeconds: Double = 3600
    public var uploadSweepSeconds: Double = 3600
    /// The exclusive lock a running Provisioner holds on its data directory.
    public var lockPath: String { dataDir + "/provisioner.lock" }
    public var uploadsDir: String { uploadDir ?? dataDir + "/uploads" }

    /// The retry policy for interrupted jobs.
    public var jobRetry: JobRetryPolicy {
        JobRetryPolicy(maxAttempts: jobMaxAttempts, baseDelay: jobRetryBackoffSeconds)
    }

    /// KVM is the default only where /dev/kvm opens read-write; set QEMU_ACCEL explicitly where it
    /// opens but cannot run stock kernels (nested PVM).
    /// Under TCG the guest is told the host TSC frequency; without it busy hosts hang at calibration.
    static func defaultCmdline(accel: String) -> String {
        GuestKernelCommandLine.make(tscKHz: accel == "tcg" ? GuestKernelCommandLine.hostTSCKHz() : nil)
    }

    static func kvmUsable() -> Bool {
        let fd = open("/dev/kvm", O_RDWR)
        if fd < 0 { return false }
        close(fd)
        return true
    }
    public var guestsDir: String { dataDir + "/guests" }
    public var volumesDir: String { dataDir + "/volumes" }

    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> ProvisionerConfig {
        func v(_ k: String) -> String? { env[k].flatMap { $0.isEmpty ? nil : $0 } }
        func int(_ k: String, _ d: Int) throws -> Int {
            guard let s = v(k) else { return d }
            guard let i = Int(s), i > 0 else { throw APIError(.invalidRequest, "\(k)=\(s) must be a positive integer") }
            return i
        }
        func seconds(_ k: String, _ d: Double) throws -> Double {
            guard let s = v(k) else { return d }
            guard let x = Double(s), x.isFinite, x >= 0, x <= 86_400 * 365 else {
                throw APIError(.invalidRequest, "\(k)=\(s) must be a number of seconds")
            }
            return x
        }
        let data = v("DATA_DIR") ?? "/var/lib/hypeman"
        var maxImage: Int64 = 32 << 30
        if let s = v("MAX_IMAGE_SIZE") {
            guard let b = Size.parse(s), b > 0 else { throw APIError(.invalidRequest, "MAX_IMAGE_SIZE=\(s) must be a size such as 32GB") }
            maxImage = b
        }
        var c = ProvisionerConfig(
            dataDir: data, dbPath: v("HYPEMAN_DB") ?? data + "/hypeman.db", runDir: v("HYPEMAN_RUN_DIR") ?? "/run/hypeman",
            maxConcurrentBuilds: try int("MAX_CONCURRENT_BUILDS", 1), workers: try int("PROVISIONER_WORKERS", 4),
            insecureRegistries: (v("INSECURE_REGISTRIES") ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty },
            registryAuthFile: v("REGISTRY_AUTH_FILE"), pollSeconds: 1,
            hypervisor: v("HYPERVISOR") ?? "auto", qemuAccel: v("QEMU_ACCEL") ?? (Self.kvmUsable() ? "kvm" : "tcg"),
            qemuBinary: v("QEMU_BINARY") ?? "qemu-system-x86_64",
            cloudHypervisorBinary: v("CLOUD_HYPERVISOR_BINARY") ?? "cloud-hypervisor",
            kernelDir: v("HYPEMAN_KERNEL_DIR") ?? data + "/system/kernel",
            guestCmdline: v("GUEST_CMDLINE") ?? Self.defaultCmdline(accel: v("QEMU_ACCEL") ?? (Self.kvmUsable() ? "kvm" : "tcg")),
            stopGraceSeconds: Double(v("STOP_GRACE_SECONDS") ?? "") ?? 5,
            agentBinary: Self.agentBinary(v("HYPEMAN_AGENT_BINARY")),
            agentReadyTimeout: Double(v("AGENT_READY_TIMEOUT") ?? "") ?? 60,
            execSocketOverride: v("EXEC_SOCKET"))
        c.maxImageBytes = maxImage
        c.jobMaxAttempts = try int("JOB_MAX_ATTEMPTS", 3)
        c.jobRetryBackoffSeconds = try seconds("JOB_RETRY_BACKOFF_SECONDS", 5)
        c.uploadDir = v("HYPEMAN_UPLOAD_DIR")
        c.uploadMaxAgeSeconds = try seconds("UPLOAD_MAX_AGE_SECONDS", 3600)
        c.uploadSweepSeconds = max(1, try seconds("UPLOAD_SWEEP_SECONDS", 3600))
        return c
    }

    /// The configured agent binary, or `hypeman-agent` next to the running executable.
    static func agentBinary(_ configured: String?) -> String? {
        if let configured { return FileManager.default.isExecutableFile(atPath: configured) ? configured : nil }
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        let candidate = (exe as NSString).deletingLastPathComponent + "/hypeman-agent"
        return FileManager.default.isExecutableFile(atPath: candidate) ? candidate : nil
    }
}
