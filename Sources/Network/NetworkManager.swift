import Foundation

/// Host networking of the Provisioner: bridge, guest TAPs and NAT rules, all inside
/// `config.netns` (or the host's namespace when it is empty). Every operation is a short,
/// blocking run of `ip`, `iptables` or `sysctl`; the caller serialises allocation itself.
public final class NetworkManager: Sendable {
    public let config: NetworkConfig
    let shell: NamespaceShell

    public init(config: NetworkConfig) {
        self.config = config
        self.shell = NamespaceShell(netns: config.netns, runner: ProcessRunner())
    }

    init(config: NetworkConfig, runner: any CommandRunner) {
        self.config = config
        self.shell = NamespaceShell(netns: config.netns, runner: runner)
    }

    /// What `initialize` changed; all empty/false when the host was already right.
    public struct InitReport: Sendable, Equatable {
        public var createdBridge = false
        public var enabledIPForward = false
        /// iptables commands run to fix the rules (empty when they were already right).
        public var ruleCommands: [String] = []
        public var removedTAPs: [String] = []
        public var changedAnything: Bool { createdBridge || enabledIPForward || !ruleCommands.isEmpty || !removedTAPs.isEmpty }
    }

    /// Startup, in contract order: refuse an overlapping subnet; create the bridge with the gateway
    /// (or check that an existing one carries it) and bring it up; require IPv4 forwarding (set it
    /// when we run in our own namespace; only check on the host's); make the NAT rules right when an
    /// uplink is configured (and remove ours when none is); delete `hype-*` links not in `keepTAPs`
    /// (pass nil to skip that, e.g. when the instance list could not be read).
    /// Safe to run again: a second run on a right host changes nothing.
    @discardableResult
    public func initialize(keepTAPs: Set<String>?) throws(NetworkError) -> InitReport {
        var report = InitReport()
        try checkNamespaceExists()
        try checkSubnetOverlap()
        report.createdBridge = try ensureBridge()
        report.enabledIPForward = try ensureIPForward()
        if let uplink = config.uplinkInterface, try link(uplink) == nil {
            throw .uplinkMissing(interface: uplink, namespace: config.netns)
        }
        report.ruleCommands = try reconcileRules(uplink: config.uplinkInterface)
        if let keep = keepTAPs { report.removedTAPs = try cleanupOrphanTAPs(keeping: keep) }
        return report
    }

    // MARK: TAPs

    /// Creates TAP `name` (a `hype-` name): owned by root, enslaved to the bridge, isolated from
    /// the other bridge ports (`bridge_slave isolated on`), up. A link with the same name is
    /// deleted first. `mac` is the host-side address of the TAP, NOT the guest's MAC (the guest's
    /// goes to the VMM; giving both ends the same address breaks forwarding); nil lets the kernel
    /// pick. If a step fails the TAP is removed again.
    public func createTAP(name: String, mac: MACAddress? = nil) throws(NetworkError) {
        try Self.checkTAPName(name)
        if let m = mac, m.bytes[0] & 1 != 0 {
            throw .invalidConfig("TAP MAC \(m) is a multicast address: use a unicast one such as 02:…, or none")
        }
        if try link(name) != nil { try deleteTAP(name: name) }
        try shell.check("ip", ["tuntap", "add", "dev", name, "mode", "tap", "user", "0"])
        do {
            if let m = mac { try shell.check("ip", ["link", "set", "dev", name, "address", m.description]) }
            try attachToBridge(name)
        } catch {
            _ = try? shell.run("ip", ["link", "del", "dev", name])
            throw error
        }
    }

    /// Deletes TAP `name`; nothing happens when it does not exist.
    public func deleteTAP(name: String) throws(NetworkError) {
        try Self.checkTAPName(name)
        let r = try shell.run("ip", ["link", "del", "dev", name])
        if r.status == 0 || Self.isNoSuchDevice(r.message) { return }
        throw .commandFailed(command: shell.display("ip", ["link", "del", "dev", name]), status: r.status, output: r.message,
                             hint: NamespaceShell.hint(for: r.message))
    }

    /// Names of all `hype-*` links in the namespace, sorted.
    public func listTAPs() throws(NetworkError) -> [String] {
        let r = try shell.check("ip", ["-j", "link", "show"])
        return try IPRouteJSON.links(r.stdout, command: "ip -j link show").map(\.name)
            .filter { $0.hasPrefix(Allocator.tapPrefix) }.sorted()
    }

    /// Deletes every `hype-*` link whose name is not in `keeping`; returns the deleted names.
    @discardableResult
    public func cleanupOrphanTAPs(keeping: Set<String>) throws(NetworkError) -> [String] {
        var removed: [String] = []
        for name in try listTAPs() where !keeping.contains(name) {
            try deleteTAP(name: name)
            removed.append(name)
        }
        return removed
    }

    // MARK: Teardown

    /// Removes everything `initialize` and `createTAP` made: `hype-*` links, our iptables rules
    /// (found by comment) and the bridge. IPv4 forwarding is left as it is. For tests and uninstall.
    public func teardown() throws(NetworkError) {
        if !config.netns.isEmpty, try !namespaceExists() { return }
        for name in try listTAPs() { try deleteTAP(name: name) }
        if (try? shell.runner.locate("iptables")) != nil { _ = try reconcileRules(uplink: nil) }
        if try link(config.bridgeName) != nil {
            try shell.check("ip", ["link", "del", "dev", config.bridgeName])
        }
    }

    /// The interface of the namespace's default route, if any (the contract's uplink when
    /// UPLINK_INTERFACE is not set).
    public func defaultRouteInterface() throws(NetworkError) -> String? {
        let r = try shell.check("ip", ["-j", "-4", "route", "show", "default"])
        return try IPRouteJSON.routes(r.stdout).first { $0.dst == "default" }?.dev
    }

    // MARK: Steps

    /// Enslaves `link` to the bridge, isolates it from the other ports and brings it up.
    func attachToBridge(_ link: String) throws(NetworkError) {
        let br = config.bridgeName
        try shell.check("ip", ["link", "set", "dev", link, "master", br],
                        hint: "does bridge \(br) exist? NetworkManager.initialize() creates it")
        try shell.check("ip", ["link", "set", "dev", link, "type", "bridge_slave", "isolated", "on"],
                        hint: "port isolation needs Linux 4.18+ and iproute2 5.0+")
        try shell.check("ip", ["link", "set", "dev", link, "up"])
    }

    func namespaceExists() throws(NetworkError) -> Bool {
        let ip = try shell.runner.locate("ip")
        let r = try shell.runner.run(ip, ["netns", "list"])
        guard r.status == 0 else {
            throw .commandFailed(command: "ip netns list", status: r.status, output: r.message, hint: NamespaceShell.hint(for: r.message))
        }
        return r.stdout.split(separator: "\n").contains { $0.split(separator: " ").first.map(String.init) == config.netns }
    }

    func checkNamespaceExists() throws(NetworkError) {
        if !config.netns.isEmpty, try !namespaceExists() { throw .namespaceMissing(config.netns) }
    }

    func checkSubnetOverlap() throws(NetworkError) {
        let r = try shell.check("ip", ["-j", "-4", "route", "show"])
        let routes = try IPRouteJSON.routes(r.stdout)
        if let hit = IPRouteJSON.overlappingRoute(routes, subnet: config.subnet, bridge: config.bridgeName) {
            throw .subnetOverlap(subnet: config.subnet.description, route: hit.dst, device: hit.dev ?? hit.type ?? "no device")
        }
    }

    /// The link called `name`, or nil when there is none.
    func link(_ name: String) throws(NetworkError) -> IPRouteJSON.Link? {
        let r = try shell.run("ip", ["-j", "-d", "link", "show", "dev", name])
        if r.status != 0 {
            if Self.isNoSuchDevice(r.message) { return nil }
            throw .commandFailed(command: shell.display("ip", ["-j", "-d", "link", "show", "dev", name]), status: r.status,
                                 output: r.message, hint: NamespaceShell.hint(for: r.message))
        }
        return try IPRouteJSON.links(r.stdout).first { $0.name == name }
    }

    /// Returns true when the bridge was created now.
    func ensureBridge() throws(NetworkError) -> Bool {
        let br = config.bridgeName
        let cidr = "\(config.gateway)/\(config.subnet.prefixLength)"
        var created = false
        if let existing = try link(br) {
            guard existing.kind == "bridge" else {
                throw .bridgeConflict(bridge: br, problem: "a \(existing.kind ?? "non-bridge") link already has this name",
                                      fix: "set BRIDGE_NAME to an unused name, or remove that link")
            }
            let r = try shell.check("ip", ["-j", "-4", "addr", "show", "dev", br])
            let addrs = try IPRouteJSON.addresses(r.stdout)
            if !addrs.contains(where: { $0.local == config.gateway && $0.prefixLength == config.subnet.prefixLength }) {
                let has = addrs.isEmpty ? "no IPv4 address" : addrs.map { "\($0.local)/\($0.prefixLength)" }.joined(separator: ", ")
                let exec = config.netns.isEmpty ? "" : "ip netns exec \(config.netns) "
                throw .bridgeConflict(bridge: br, problem: "it exists but carries \(has) instead of the gateway \(cidr)",
                                      fix: "add it with `\(exec)ip addr add \(cidr) dev \(br)`, delete the bridge with `\(exec)ip link del \(br)` "
                                        + "so that it is recreated, or set SUBNET_CIDR/SUBNET_GATEWAY to match it")
            }
        } else {
            try shell.check("ip", ["link", "add", "name", br, "type", "bridge"])
            do {
                try shell.check("ip", ["addr", "add", cidr, "brd", config.subnet.broadcast.description, "dev", br])
            } catch {
                _ = try? shell.run("ip", ["link", "del", "dev", br])
                throw error
            }
            created = true
        }
        try shell.check("ip", ["link", "set", "dev", br, "up"])
        return created
    }

    /// Returns true when forwarding was switched on now.
    func ensureIPForward() throws(NetworkError) -> Bool {
        let r = try shell.check("sysctl", ["-n", "net.ipv4.ip_forward"])
        let value = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        if value == "1" { return false }
        guard !config.netns.isEmpty else { throw .ipForwardDisabled(namespace: "") }
        try shell.check("sysctl", ["-w", "net.ipv4.ip_forward=1"])
        return true
    }

    /// Makes our rules exactly the desired ones (none when `uplink` is nil); returns the iptables
    /// commands run. Without an uplink and without iptables there is nothing to do.
    func reconcileRules(uplink: String?) throws(NetworkError) -> [String] {
        if uplink == nil, (try? shell.runner.locate("iptables")) == nil { return [] }
        let desired = uplink.map { HypemanRules.desired(bridge: config.bridgeName, subnet: config.subnet, uplink: $0) } ?? []
        var ran: [String] = []
        for (table, chain) in HypemanRules.chains {
            let listing = try shell.check("iptables", ["-w", "10", "-t", table, "-S", chain],
                                          hint: "iptables must work here; on Debian 12 install it with apt-get install iptables").stdout
            let cmds = RulePlanner.plan(table: table, chain: chain, listing: listing, desired: desired,
                                        ownComments: HypemanRules.allComments)
            for c in cmds {
                try shell.check("iptables", ["-w", "10"] + c)
                ran.append(shell.display("iptables", c))
            }
        }
        return ran
    }

    static func isNoSuchDevice(_ message: String) -> Bool {
        message.contains("does not exist") || message.contains("Cannot find device")
    }

    static func checkTAPName(_ name: String) throws(NetworkError) {
        try NetworkConfig.checkInterfaceName(name, what: "TAP name")
        guard name.hasPrefix(Allocator.tapPrefix) else {
            throw .invalidConfig("TAP name \"\(name)\" must start with \(Allocator.tapPrefix) (see Allocator.tapName(forInstanceID:))")
        }
    }
}
