import Foundation
import Model
import Store
import QEMUDriver
import CloudHypervisorDriver
import ExecGateway

/// Wiring of the `hypeman-provisioner` executable: config, reconcile, the job runner, SIGTERM.
public enum ProvisionerMain {
    public static func run() {
        let log = Log("prov")
        let config: ProvisionerConfig
        do { config = try ProvisionerConfig.fromEnvironment() } catch {
            log.error("configuration error", ["error": "\(error)"])
            exit(2)
        }
        let fm = FileManager.default
        try? fm.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
        // One Provisioner per data directory, before anything is read or changed: a second one
        // would reconcile (roll back) work the first is doing.
        let lock: ProvisionerLock
        do { lock = try ProvisionerLock(path: config.lockPath) } catch {
            log.error("cannot start: \(error)", ["data_dir": config.dataDir])
            exit(3)
        }
        for d in [config.runDir, config.guestsDir, config.volumesDir] {
            try? fm.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        // Block SIGTERM/SIGINT before any thread starts, so only the main thread's sigwait sees them.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let store: Store
        do { store = try Store(path: config.dbPath) } catch {
            log.error("cannot open the database", ["error": "\(error)", "db": config.dbPath])
            exit(1)
        }
        let env = ProcessInfo.processInfo.environment
        let network = GuestNetwork(environment: env, keepTAPs: InstanceManager.liveTAPs(store: store))
        let netns = network.config?.netns
        let drivers = DriverTable(drivers: [
            CloudHypervisorDriver(configuration: .init(binary: GuestNetwork.vmmBinary(config.cloudHypervisorBinary, netns: netns, dataDir: config.dataDir))),
            // QMP calls answer in milliseconds; 10 s without an answer means the VMM is stuck (shown as Unknown).
            QEMUDriver(binary: GuestNetwork.vmmBinary(config.qemuBinary, netns: netns, dataDir: config.dataDir), accel: config.qemuAccel,
                       timeouts: QEMUTimeouts(command: .seconds(10))),
        ], preferred: config.hypervisor)
        if config.qemuAccel == "tcg" { log.warning("QEMU runs with TCG software emulation (slow); set QEMU_ACCEL=kvm on hosts with usable KVM") }
        let assets = GuestAssets(kernelDir: config.kernelDir, outDir: config.dataDir + "/system/initramfs", agentBinary: config.agentBinary)
        if config.agentBinary == nil {
            log.warning("guest agent binary not found: guests boot without exec, live volumes or readiness; build it with "
                        + "`swift build --product hypeman-agent` or set HYPEMAN_AGENT_BINARY")
        }
        // Readiness: an agent's hello turns its instance from Initializing to Running. The callback
        // runs on link threads, so its store connection is shared under a lock.
        let readyStore: Store
        do { readyStore = try Store(path: config.dbPath) } catch {
            log.error("cannot open the database", ["error": "\(error)", "db": config.dbPath])
            exit(1)
        }
        nonisolated(unsafe) let sharedReadyStore = readyStore
        let readyLock = NSLock()
        let agents = AgentHub { id in
            readyLock.lock(); defer { readyLock.unlock() }
            _ = try? sharedReadyStore.markAgentReady(id: id)
        }
        let instances = InstanceManager(config: config, drivers: drivers, assets: assets, network: network, agents: agents)
        let images = makeImageService(config)
        let handlers = JobHandlers(config: config, images: images, instances: instances)
        let runner = JobRunner(config: config, handlers: handlers)
        let exec: ExecServer
        do {
            exec = ExecServer(socketPath: config.execSocket, backend: try AgentExecBackend(agents: agents, dbPath: config.dbPath))
            try Reconciler(config: config, instances: instances).run(store: store)
            try runner.start()
            try exec.start()
        } catch {
            log.error("cannot start", ["error": "\(error)", "db": config.dbPath])
            exit(1)
        }
        log.info("provisioner started", ["data_dir": config.dataDir, "workers": String(config.workers),
                                         "builds": String(config.maxConcurrentBuilds),
                                         "hypervisors": instances.drivers.isEmpty ? "none" : instances.drivers.joined(separator: ","),
                                         "exec_socket": config.execSocket, "agent": config.agentBinary ?? "none"])
        // Staged uploads a crash left behind: swept now and periodically.
        let sweeper = UploadSweeper(dir: config.uploadsDir, maxAge: config.uploadMaxAgeSeconds)
        sweeper.sweep(store: store)
        let sweepEvery = config.uploadSweepSeconds, dbPath = config.dbPath
        let sweepThread = Thread {
            guard let s = try? Store(path: dbPath) else { return }
            while true {
                Thread.sleep(forTimeInterval: sweepEvery)
                sweeper.sweep(store: s)
            }
        }
        sweepThread.name = "upload-sweep"
        sweepThread.start()
        runner.poke()
        var sig: Int32 = 0
        sigwait(&set, &sig)
        log.info("stopping: finishing running jobs", ["signal": String(sig)])
        exec.stop()
        runner.stop()
        agents.closeAll()
        log.info("stopped")
        withExtendedLifetime(lock) {}
        exit(0)
    }
}
