import Foundation
import VMM
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs VMs with Cloud Hypervisor: one `cloud-hypervisor` process per VM, driven over its REST
/// API socket at `<runDir>/ch.sock`. Stateless: everything about a VM is in its `VMSpec`, its
/// run directory and the live process.
public struct CloudHypervisorDriver: HypervisorDriver {
    /// Where the binary is and how long things may take. Defaults suit production hosts.
    public struct Configuration: Sendable {
        /// A path (containing `/`) or a name looked up in `PATH`.
        public var binary: String
        /// Extra VMM arguments after `--api-socket` (for example `["-v"]`).
        public var extraArguments: [String]
        /// Added to the VMM's minimal environment.
        public var environment: [String: String]
        /// Seconds for the API socket to accept after spawn.
        public var readyTimeout: Double
        /// Per-call limit for ordinary API calls.
        public var callTimeout: Double
        /// Per-call limit for boot, snapshot and restore.
        public var longCallTimeout: Double
        /// Ladder: seconds to wait for the process after `vmm.shutdown`, then after SIGTERM.
        public var vmmShutdownWait: Double
        public var termWait: Double

        public init(binary: String = "cloud-hypervisor", extraArguments: [String] = [],
                    environment: [String: String] = [:], readyTimeout: Double = 5, callTimeout: Double = 30,
                    longCallTimeout: Double = 600, vmmShutdownWait: Double = 2, termWait: Double = 2) {
            self.binary = binary; self.extraArguments = extraArguments; self.environment = environment
            self.readyTimeout = readyTimeout; self.callTimeout = callTimeout; self.longCallTimeout = longCallTimeout
            self.vmmShutdownWait = vmmShutdownWait; self.termWait = termWait
        }
    }

    public let configuration: Configuration

    public init(configuration: Configuration = Configuration()) { self.configuration = configuration }

    public var kind: String { "cloud-hypervisor" }

    public var capabilities: Capabilities {
        Capabilities(snapshot: true, memoryResize: true, diskHotplug: true, vsock: true)
    }

    /// The binary's absolute path, or nil when it is not there.
    public func binaryPath() -> String? {
        let name = configuration.binary
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? CHProcess.minimalEnvironment["PATH"] ?? ""
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    public func isAvailable() -> Bool { binaryPath() != nil }

    /// The agent's AF_VSOCK listener, through CH's hybrid-vsock socket.
    public func agentChannel(_ spec: VMSpec) -> AgentChannel? {
        .hybridVsock(socket: CHConfig.vsockSocketPath(runDir: spec.runDir), port: AgentChannel.vsockPort)
    }

    /// Spawn → `vmm.ping` → `vm.create` → `vm.boot` → `vm.resize` to base + hot-plug (best effort).
    /// A failed create stops the VMM; a failed boot calls `vm.delete` and then stops it.
    public func launch(_ spec: VMSpec) throws(VMMError) -> any RunningVM {
        let (process, client) = try start(spec)
        let version: Int?
        do {
            version = try client.ping().majorVersion
            try client.create(CHConfig.vmConfig(for: spec, vmmMajorVersion: version))
        } catch {
            stop(process, client, spec)
            throw error
        }
        do {
            try client.boot()
        } catch {
            try? client.delete()
            stop(process, client, spec)
            throw error
        }
        if spec.hotplugBytes > 0 {
            try? client.resize(desiredRam: spec.memoryBytes + spec.hotplugBytes)
        }
        return CHRunningVM(spec: spec, client: client, process: process, vmmMajorVersion: version, timing: configuration)
    }

    /// A fresh VMM → `vm.restore {"source_url":"file://<dir>","prefault":false}` → `vm.resume`.
    /// Any failure stops the new VMM.
    public func restore(_ spec: VMSpec, from snapshotDir: String) throws(VMMError) -> any RunningVM {
        let (process, client) = try start(spec)
        let version: Int?
        do {
            version = try client.ping().majorVersion
            try client.restore(sourceURL: "file://" + absolute(snapshotDir), prefault: false)
            try client.resume()
        } catch {
            stop(process, client, spec)
            throw error
        }
        return CHRunningVM(spec: spec, client: client, process: process, vmmMajorVersion: version, timing: configuration)
    }

    /// Re-attaches when `pid` is alive, the VMM on `<runDir>/ch.sock` answers `vmm.ping` (with
    /// that pid, when it reports one) and `pid` is proven to be that VMM (`CHProcess.adopt`).
    public func attach(_ spec: VMSpec, pid: Int32) -> (any RunningVM)? {
        guard pid > 0, sysKill(pid, 0) == 0 || errno == EPERM else { return nil }
        let socket = CHConfig.apiSocketPath(runDir: spec.runDir)
        let client = makeClient(socket)
        var quick = client
        quick.timeout = min(client.timeout, 5)
        guard let pong = try? quick.ping() else { return nil }
        if let reported = pong.pid, reported != Int64(pid) { return nil }
        guard case .success(let process) = CHProcess.adopt(pid: pid, apiSocketPath: socket) else { return nil }
        return CHRunningVM(spec: spec, client: client, process: process,
                           vmmMajorVersion: pong.majorVersion, timing: configuration)
    }

    // MARK: - Steps

    func makeClient(_ socket: String) -> CHClient {
        CHClient(socketPath: socket, timeout: configuration.callTimeout, longTimeout: configuration.longCallTimeout)
    }

    /// Run directory (0700), stale vsock socket removed, VMM spawned and accepting.
    func start(_ spec: VMSpec) throws(VMMError) -> (CHProcess, CHClient) {
        guard let binary = binaryPath() else {
            throw .unsupported("cloud-hypervisor binary \"\(configuration.binary)\" not found (PATH or configured path); "
                               + "install the upstream static release and point the provisioner at it")
        }
        do {
            try FileManager.default.createDirectory(atPath: spec.runDir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw .process("cannot create run directory \(spec.runDir): \(error.localizedDescription)")
        }
        let vsock = CHConfig.vsockSocketPath(runDir: spec.runDir)
        switch SocketProbe.probe(vsock) {
        case .accepting: throw .process("vsock socket \(vsock) already accepts connections: another VMM is using it")
        case .notSocket: throw .process("\(vsock) exists and is not a socket; refusing to remove it")
        case .stale: _ = unlink(vsock)
        case .absent: break
        }
        let socket = CHConfig.apiSocketPath(runDir: spec.runDir)
        let options = CHProcess.Options(binaryPath: binary, extraArguments: configuration.extraArguments,
                                        environment: configuration.environment, readyTimeout: configuration.readyTimeout)
        let process = try CHProcess.spawn(options, apiSocketPath: socket, logPath: spec.vmmLogPath)
        return (process, makeClient(socket))
    }

    func stop(_ process: CHProcess, _ client: CHClient, _ spec: VMSpec) {
        process.stop(client: client, shutdownWait: configuration.vmmShutdownWait, termWait: configuration.termWait)
        Self.removeStaleSocket(CHConfig.vsockSocketPath(runDir: spec.runDir))
    }

    func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    /// Unlinks a socket file nothing accepts on.
    static func removeStaleSocket(_ path: String) {
        if SocketProbe.probe(path) == .stale { _ = unlink(path) }
    }
}
