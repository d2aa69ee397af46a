import Model

/// A disk given to a VM, in guest device order (vda, vdb, …).
public struct DiskSpec: Sendable, Equatable {
    /// Stable device id, used for hot-unplug (e.g. `rootfs`, `overlay`, `config`, `vol-<id>`).
    public var id: String
    public var path: String
    public var readonly: Bool
    public init(id: String, path: String, readonly: Bool) { self.id = id; self.path = path; self.readonly = readonly }

    /// The virtio-blk serial the guest sees (`/sys/block/vdX/serial`): the id's characters from
    /// `[A-Za-z0-9._-]`, at most 20 bytes. The guest agent finds hot-plugged disks by it.
    public var serial: String { DiskSpec.serial(forID: id) }

    public static func serial(forID id: String) -> String {
        String(String.UnicodeScalarView(id.unicodeScalars.filter { s in
            s.isASCII && (s.properties.isAlphabetic || ("0"..."9").contains(s) || s == "-" || s == "." || s == "_")
        }).prefix(20))
    }
}

/// A network interface: a TAP already created and enslaved by the network manager.
public struct NetSpec: Sendable, Equatable {
    public var tap: String
    public var mac: String
    public var ip: String
    public var mask: String
    public init(tap: String, mac: String, ip: String, mask: String) { self.tap = tap; self.mac = mac; self.ip = ip; self.mask = mask }
}

/// Everything a driver needs to launch (or restore) one VM. Hypervisor-neutral: each driver
/// translates it with a pure function (`VMSpec → VmConfig` for CH, `VMSpec → [String]` for QEMU).
public struct VMSpec: Sendable, Equatable {
    public var instanceID: String
    public var vcpus: Int
    /// Base memory in bytes.
    public var memoryBytes: Int64
    /// Hot-pluggable memory in bytes (virtio-mem); 0 = none.
    public var hotplugBytes: Int64
    public var kernelPath: String
    public var initramfsPath: String
    public var cmdline: String
    public var disks: [DiskSpec]
    public var net: NetSpec?
    /// Guest serial console output (the instance's app.log).
    public var serialLogPath: String
    /// The VMM process's own stdout/stderr (vmm.log).
    public var vmmLogPath: String
    /// Per-instance directory for control sockets (mode 0700; sockets have short names).
    public var runDir: String
    public var vsockCID: UInt32
    /// QEMU acceleration: "kvm" on real hosts, "tcg" here.
    public var accel: String

    public init(instanceID: String, vcpus: Int, memoryBytes: Int64, hotplugBytes: Int64, kernelPath: String,
                initramfsPath: String, cmdline: String, disks: [DiskSpec], net: NetSpec?, serialLogPath: String,
                vmmLogPath: String, runDir: String, vsockCID: UInt32, accel: String = "kvm") {
        self.instanceID = instanceID; self.vcpus = vcpus; self.memoryBytes = memoryBytes; self.hotplugBytes = hotplugBytes
        self.kernelPath = kernelPath; self.initramfsPath = initramfsPath; self.cmdline = cmdline; self.disks = disks
        self.net = net; self.serialLogPath = serialLogPath; self.vmmLogPath = vmmLogPath; self.runDir = runDir
        self.vsockCID = vsockCID; self.accel = accel
    }
}

/// What a driver can do; callers check before any optional operation.
public struct Capabilities: Sendable, Equatable {
    public var snapshot: Bool
    public var memoryResize: Bool
    public var diskHotplug: Bool
    public var vsock: Bool
    public init(snapshot: Bool, memoryResize: Bool, diskHotplug: Bool, vsock: Bool) {
        self.snapshot = snapshot; self.memoryResize = memoryResize; self.diskHotplug = diskHotplug; self.vsock = vsock
    }
}

/// The VM's state as its VMM reports it.
public enum VMRunState: String, Sendable { case created = "Created", running = "Running", paused = "Paused", shutdown = "Shutdown" }

/// Failures, with transport, status and decoding kept apart.
public enum VMMError: Error, Sendable, CustomStringConvertible, Equatable {
    case unsupported(String)
    case process(String)          // spawn/exit problems
    case transport(String)        // socket connect/read/write
    case status(Int, String)      // VMM answered with an error status and body
    case decoding(String)         // unexpected answer shape
    case timeout(String)
    /// A spec no VM can have (sizes that overflow, …): refused before anything starts.
    case invalidSpec(String)

    public var description: String {
        switch self {
        case .unsupported(let s): return "unsupported: \(s)"
        case .process(let s): return "VMM process: \(s)"
        case .transport(let s): return "VMM transport: \(s)"
        case .status(let c, let b): return "VMM returned error (status \(c)): \(b)"
        case .decoding(let s): return "VMM answer not understood: \(s)"
        case .timeout(let s): return "VMM timed out: \(s)"
        case .invalidSpec(let s): return "invalid VM spec: \(s)"
        }
    }
}

/// How the host reaches a VM's guest agent (`hypeman-agent`, started by the guest init).
public enum AgentChannel: Sendable, Equatable {
    /// A Unix stream socket that is the link itself: QEMU's chardev behind the virtio-serial port
    /// named `virtioPortName` (one host connection at a time).
    case unixSocket(String)
    /// Cloud Hypervisor's hybrid vsock: connect to `socket`, write `CONNECT <port>\n`, read an
    /// `OK <n>` line; the rest of the stream is the link to the agent's AF_VSOCK listener.
    case hybridVsock(socket: String, port: UInt32)

    /// The virtio-serial port name the agent looks for (`/sys/class/virtio-ports/*/name`).
    public static let virtioPortName = "hypeman.agent"
    /// The AF_VSOCK port the agent listens on.
    public static let vsockPort: UInt32 = 2222
}

/// One kind of VMM (stateless). Launch boots a VM to running; restore starts a fresh VMM from a
/// snapshot directory and resumes it; attach re-connects to a live VMM after a daemon restart.
public protocol HypervisorDriver: Sendable {
    /// `qemu` or `cloud-hypervisor` (the Instance `hypervisor` field).
    var kind: String { get }
    var capabilities: Capabilities { get }
    /// True when the VMM binary exists on this host.
    func isAvailable() -> Bool
    func launch(_ spec: VMSpec) throws(VMMError) -> any RunningVM
    func restore(_ spec: VMSpec, from snapshotDir: String) throws(VMMError) -> any RunningVM
    /// Re-attaches to a VMM still running with `pid` (nil when it is gone).
    func attach(_ spec: VMSpec, pid: Int32) -> (any RunningVM)?
    /// Where the guest agent of a VM launched from `spec` is reached; nil when this driver gives
    /// the guest no agent channel.
    func agentChannel(_ spec: VMSpec) -> AgentChannel?
}

extension HypervisorDriver {
    public func agentChannel(_ spec: VMSpec) -> AgentChannel? { nil }
}

/// A VM whose VMM process is running. Each method names the wire call it maps to in its driver.
public protocol RunningVM: Sendable {
    var pid: Int32 { get }
    func state() throws(VMMError) -> VMRunState
    func pause() throws(VMMError)
    func resume() throws(VMMError)
    /// Writes a snapshot into `dir` (the VM must be paused); the VMM keeps running.
    func snapshot(to dir: String) throws(VMMError)
    /// Sets the guest's memory (base + plugged hotplug) to `bytes`.
    func resizeMemory(to bytes: Int64) throws(VMMError)
    /// Asks the guest to power off, waits up to `grace` seconds, then stops the VMM hard; reaps it.
    func shutdown(grace: Double) throws(VMMError)
    /// SIGKILL and reap; never fails.
    func kill()
    func addDisk(_ disk: DiskSpec) throws(VMMError)
    func removeDisk(id: String) throws(VMMError)
}

extension RunningVM {
    public func snapshot(to dir: String) throws(VMMError) { throw .unsupported("snapshot") }
    public func resizeMemory(to bytes: Int64) throws(VMMError) { throw .unsupported("memory resize") }
    public func addDisk(_ disk: DiskSpec) throws(VMMError) { throw .unsupported("disk hotplug") }
    public func removeDisk(id: String) throws(VMMError) { throw .unsupported("disk hot-unplug") }
}
