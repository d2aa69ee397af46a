import Foundation
import Model
import Store
import Network
import VMM
import GuestBoot

/// The `default` network as instances see it: allocation (under one lock, against what the store
/// says is taken), TAP create/delete, and the reason when networking is unavailable on this host.
public final class GuestNetwork: @unchecked Sendable {
    public let config: NetworkConfig?
    let manager: NetworkManager?
    /// Why networked instances cannot run here (nil when they can).
    public let unavailableReason: String?
    let lock = NSLock()
    let log = Log("prov.network")

    /// HYPEMAN_NETWORK=off disables it; otherwise the bridge/NAT setup runs in NETWORK_NETNS (or the
    /// root namespace when that is empty) and any failure is kept as the reason networked creates fail.
    public init(environment: [String: String], keepTAPs: Set<String>) {
        if (environment["HYPEMAN_NETWORK"] ?? "on").lowercased() == "off" {
            config = nil; manager = nil
            unavailableReason = "networking is turned off on this host (HYPEMAN_NETWORK=off): create the instance with \"network\": {\"enabled\": false}"
            return
        }
        do {
            let c = try NetworkConfig.fromEnvironment(environment)
            let m = NetworkManager(config: c)
            try m.initialize(keepTAPs: keepTAPs)
            config = c; manager = m; unavailableReason = nil
            log.info("network ready", ["bridge": c.bridgeName, "subnet": "\(c.subnet)", "netns": c.netns.isEmpty ? "(root)" : c.netns])
        } catch {
            config = nil; manager = nil
            unavailableReason = "networking is not available on this host: \(error)"
            log.error("network setup failed; networked instances cannot start", ["error": "\(error)"])
        }
    }

    func require() throws -> (NetworkConfig, NetworkManager) {
        guard let config, let manager else { throw APIError(.dependencyMissing, unavailableReason ?? "networking unavailable") }
        return (config, manager)
    }

    /// A fresh allocation for `inst`, recorded in its row before the lock is released, and its TAP.
    func attach(_ inst: inout InstanceRecord, store: Store) throws -> NetworkAllocation {
        let (config, manager) = try require()
        lock.lock(); defer { lock.unlock() }
        let taken = try store.takenAddresses(excluding: inst.id)
        let alloc: NetworkAllocation
        do { alloc = try config.allocate(instanceID: inst.id, takenIPs: taken.ips, takenMACs: taken.macs) } catch {
            throw APIError(.limitExceeded, "no address left in the instance network: \(error)")
        }
        inst.ip = "\(alloc.ip)"
        inst.mac = "\(alloc.mac)"
        try store.updateInstanceRuntime(inst)
        do { try manager.createTAP(name: alloc.tap) } catch {
            throw APIError(.internalError, "creating TAP \(alloc.tap) failed: \(error)")
        }
        return alloc
    }

    /// The TAP again for a kept allocation (restore).
    func reattach(_ inst: InstanceRecord) throws -> NetworkAllocation? {
        guard inst.networkEnabled, let ipText = inst.ip, let macText = inst.mac else { return nil }
        let (config, manager) = try require()
        guard let ip = IPv4Address(ipText), let mac = MACAddress(macText) else {
            throw APIError(.internalError, "instance \(inst.id) has an unreadable address \(ipText)/\(macText)")
        }
        let tap = try Allocator.tapName(forInstanceID: inst.id)
        do { try manager.createTAP(name: tap) } catch { throw APIError(.internalError, "creating TAP \(tap) failed: \(error)") }
        return NetworkAllocation(tap: tap, ip: ip, mac: mac, prefixLength: config.subnet.prefixLength,
                                 netmask: config.subnet.netmask, gateway: config.gateway, dns: config.dnsServer)
    }

    /// Removes the instance's TAP (idempotent; errors are logged, never thrown).
    func detach(_ instanceID: String) {
        guard let manager, let tap = try? Allocator.tapName(forInstanceID: instanceID) else { return }
        do { try manager.deleteTAP(name: tap) } catch { log.warning("TAP delete failed", ["tap": tap, "error": "\(error)"]) }
    }

    static func resolve(_ binary: String) -> String? {
        if binary.contains("/") { return FileManager.default.isExecutableFile(atPath: binary) ? binary : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        return path.split(separator: ":").map { "\($0)/\(binary)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func netSpec(_ a: NetworkAllocation) -> NetSpec {
        NetSpec(tap: a.tap, mac: "\(a.mac)", ip: "\(a.ip)", mask: "\(a.netmask)")
    }

    static func guestNetwork(_ a: NetworkAllocation) -> GuestConfig.Network {
        GuestConfig.Network(ip: "\(a.ip)", prefixLength: a.prefixLength, gateway: "\(a.gateway)", dns: "\(a.dns)")
    }

    /// Where the VMM must run: a wrapper that enters the namespace (TAPs there open only from inside).
    /// (A VMM that is not installed is returned as is, so its driver still reports it missing.)
    public static func vmmBinary(_ binary: String, netns: String?, dataDir: String) -> String {
        guard let netns, !netns.isEmpty, let resolved = resolve(binary) else { return binary }
        let dir = dataDir + "/system/bin"
        let path = dir + "/\(URL(fileURLWithPath: binary).lastPathComponent)-in-\(netns)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let script = "#!/bin/sh\n# Runs the VMM inside network namespace \(netns) (written by hypeman-provisioner).\nexec ip netns exec '\(netns)' '\(resolved)' \"$@\"\n"
        FileManager.default.createFile(atPath: path, contents: Data(script.utf8), attributes: [.posixPermissions: 0o755])
        return path
    }
}
