import Foundation
import Testing
@testable import Network

/// Real bridges, TAPs and iptables rules, each test inside namespaces it creates and always
/// deletes. 192.0.2.0/24 (documentation range) links a "host" namespace to an "uplink" one.
@Suite(.enabled(if: NetEnv.usable, "needs root and working `ip netns`"))
struct IntegrationTests {
    /// hm-host-<tag> and hm-up-<tag> joined by a veth: up0 192.0.2.1 (host side) <-> up1 192.0.2.2.
    func hostAndUplink(_ env: TestNet) throws -> (host: String, up: String) {
        let host = try env.namespace("hm-host"), up = try env.namespace("hm-up")
        try env.must(host, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", up)
        try env.must(host, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
        try env.must(host, "ip", "link", "set", "up0", "up")
        try env.must(host, "ip", "route", "add", "default", "via", "192.0.2.2")
        try env.must(up, "ip", "addr", "add", "192.0.2.2/24", "dev", "up1")
        try env.must(up, "ip", "link", "set", "up1", "up")
        return (host, up)
    }

    /// How often each of our comments appears in the namespace's iptables rules.
    func ruleCounts(_ env: TestNet, _ ns: String) throws -> [String: Int] {
        let text = try env.must(ns, "iptables", "-w", "-t", "nat", "-S").out + env.must(ns, "iptables", "-w", "-S").out
        var counts: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            for c in ["hypeman-nat", "hypeman-fwd-out", "hypeman-fwd-in"] where line.contains("--comment \(c) ") {
                counts[c, default: 0] += 1
            }
        }
        return counts
    }

    func forwardRules(_ env: TestNet, _ ns: String) throws -> [String] {
        try env.must(ns, "iptables", "-w", "-S", "FORWARD").out.split(separator: "\n").map(String.init).filter { $0.hasPrefix("-A ") }
    }

    /// `bridge -d link show` blocks by port name.
    func bridgePorts(_ env: TestNet, _ ns: String) throws -> [String: String] {
        var ports: [String: String] = [:]
        var current: String?
        for line in try env.must(ns, "bridge", "-d", "link", "show").out.split(separator: "\n") {
            if let first = line.first, first.isNumber {
                let name = line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces).split(separator: "@")[0]
                current = String(name)
                ports[String(name)] = String(line)
            } else if let c = current {
                ports[c, default: ""] += "\n" + line
            }
        }
        return ports
    }

    func ifindex(_ env: TestNet, _ ns: String, _ dev: String) throws -> Int? {
        let out = try env.must(ns, "ip", "-j", "link", "show", "dev", dev).out
        let arr = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]
        return arr?.first?["ifindex"] as? Int
    }

    @Test func lifecycle() throws {
        let env = TestNet()
        defer { env.destroy() }
        let (host, _) = try hostAndUplink(env)
        #expect(try env.must(host, "sysctl", "-n", "net.ipv4.ip_forward").out.trimmingCharacters(in: .whitespacesAndNewlines) == "0")

        let config = try NetworkConfig(uplinkInterface: "up0", netns: host)
        let m = NetworkManager(config: config)
        let clock = ContinuousClock()
        var first = NetworkManager.InitReport()
        let initTime = try clock.measure { first = try m.initialize(keepTAPs: []) }
        #expect(first.createdBridge)
        #expect(first.enabledIPForward)
        #expect(first.ruleCommands.count == 3)
        var second = NetworkManager.InitReport()
        let reinitTime = try clock.measure { second = try m.initialize(keepTAPs: []) }
        #expect(!second.changedAnything, "second run changed \(second)")

        // Bridge with the gateway, up; forwarding on; each rule exactly once, FORWARD ones on top.
        let link = try env.must(host, "ip", "-d", "link", "show", "dev", "vmbr0").out
        #expect(link.contains("bridge"))
        #expect(link.contains(",UP"))
        #expect(try env.must(host, "ip", "-4", "addr", "show", "dev", "vmbr0").out.contains("inet 10.100.0.1/16 brd 10.100.255.255"))
        #expect(try env.must(host, "sysctl", "-n", "net.ipv4.ip_forward").out.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        #expect(try ruleCounts(env, host) == ["hypeman-nat": 1, "hypeman-fwd-out": 1, "hypeman-fwd-in": 1])
        let fwd = try forwardRules(env, host)
        #expect(fwd.count == 2 && fwd[0].contains("hypeman-fwd-out") && fwd[1].contains("hypeman-fwd-in"))
        #expect(try env.must(host, "iptables", "-w", "-t", "nat", "-S", "POSTROUTING").out
                .contains("-A POSTROUTING -s 10.100.0.0/16 -o up0 -m comment --comment hypeman-nat -j MASQUERADE"))

        // Two TAPs from allocations: enslaved, isolated, root-owned; one with a chosen host-side MAC.
        let a = try config.allocate(instanceID: "k3v9q0b2x7m4n8p1r5s6t0wz", takenIPs: [], takenMACs: [])
        let b = try config.allocate(instanceID: "q8w7e6r5t4y3u2i1o0p9a8s7", takenIPs: [a.ip.description], takenMACs: [a.mac.description])
        #expect(a.tap == "hype-k3v9q0b2" && b.tap == "hype-q8w7e6r5")
        let hostSideMAC = try #require(MACAddress("02:aa:00:00:00:01"))
        let tapTime = try clock.measure { try m.createTAP(name: a.tap) }
        try m.createTAP(name: b.tap, mac: hostSideMAC)
        print("NetworkTests: initialize \(initTime), again \(reinitTime), createTAP \(tapTime) (in a netns, parallel tests)")
        let ports = try bridgePorts(env, host)
        for t in [a.tap, b.tap] {
            let block = try #require(ports[t], "\(t) is not a bridge port: \(ports.keys.sorted())")
            #expect(block.contains("master vmbr0"))
            #expect(block.contains("isolated on"))
            let details = try env.must(host, "ip", "-d", "link", "show", "dev", t).out
            #expect(details.contains("tun type tap"))
            #expect(details.contains("user root"))
            #expect(details.contains(",UP") || details.contains("<UP"))
        }
        #expect(try env.must(host, "ip", "link", "show", "dev", b.tap).out.contains("link/ether 02:aa:00:00:00:01"))
        #expect(try m.listTAPs() == [a.tap, b.tap].sorted())

        // Re-creating replaces the link.
        let before = try ifindex(env, host, a.tap)
        try m.createTAP(name: a.tap)
        let after = try ifindex(env, host, a.tap)
        #expect(before != nil && after != nil && before != after)
        #expect(try bridgePorts(env, host)[a.tap]?.contains("isolated on") == true)

        // Orphans: a stray hype-* link goes, ours stay; also through initialize.
        try env.must(host, "ip", "tuntap", "add", "dev", "hype-dead0000", "mode", "tap")
        #expect(try m.cleanupOrphanTAPs(keeping: [a.tap, b.tap]) == ["hype-dead0000"])
        try env.must(host, "ip", "tuntap", "add", "dev", "hype-dead0000", "mode", "tap")
        let third = try m.initialize(keepTAPs: [a.tap, b.tap])
        #expect(third.removedTAPs == ["hype-dead0000"])
        #expect(third.ruleCommands.isEmpty && !third.createdBridge && !third.enabledIPForward)
        #expect(try m.listTAPs() == [a.tap, b.tap].sorted())

        // deleteTAP is idempotent.
        try m.deleteTAP(name: a.tap)
        try m.deleteTAP(name: a.tap)
        #expect(try m.listTAPs() == [b.tap])

        // teardown leaves nothing of ours (and can run twice).
        try m.teardown()
        try m.teardown()
        #expect(try m.listTAPs() == [])
        #expect(env.exec(host, "ip", "link", "show", "dev", "vmbr0").status != 0)
        #expect(try ruleCounts(env, host).isEmpty)
        #expect(try forwardRules(env, host).isEmpty)
        #expect(try env.must(host, "ip", "-o", "link", "show").out.split(separator: "\n").count == 2, "only lo and up0 remain")
    }

    @Test func wrongAndMisplacedRulesAreRepaired() throws {
        let env = TestNet()
        defer { env.destroy() }
        let (host, _) = try hostAndUplink(env)
        // A stale MASQUERADE for another uplink, a foreign rule on top of FORWARD, a duplicate.
        try env.must(host, "iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", "10.100.0.0/16", "-o", "lo",
                     "-m", "comment", "--comment", "hypeman-nat", "-j", "MASQUERADE")
        try env.must(host, "iptables", "-w", "-A", "FORWARD", "-i", "vmbr0", "-o", "up0", "-m", "comment", "--comment", "hypeman-fwd-out", "-j", "ACCEPT")
        try env.must(host, "iptables", "-w", "-A", "FORWARD", "-i", "vmbr0", "-o", "up0", "-m", "comment", "--comment", "hypeman-fwd-out", "-j", "ACCEPT")
        try env.must(host, "iptables", "-w", "-I", "FORWARD", "1", "-p", "tcp", "--dport", "9", "-m", "comment", "--comment", "someone else", "-j", "DROP")

        let m = NetworkManager(config: try NetworkConfig(uplinkInterface: "up0", netns: host))
        let r = try m.initialize(keepTAPs: nil)
        #expect(r.ruleCommands.count == 3 + 3, "3 deletions, 3 insertions: \(r.ruleCommands)")
        #expect(try ruleCounts(env, host) == ["hypeman-nat": 1, "hypeman-fwd-out": 1, "hypeman-fwd-in": 1])
        let fwd = try forwardRules(env, host)
        #expect(fwd.count == 3)
        #expect(fwd[0].contains("hypeman-fwd-out") && fwd[0].contains("--ctstate NEW,RELATED,ESTABLISHED"))
        #expect(fwd[1].contains("hypeman-fwd-in") && fwd[1].contains("-i up0 -o vmbr0"))
        #expect(fwd[2].contains("someone else"), "others' rules stay")
        #expect(try env.must(host, "iptables", "-w", "-t", "nat", "-S", "POSTROUTING").out.contains("-o up0 -m comment --comment hypeman-nat"))
        #expect(try !m.initialize(keepTAPs: nil).changedAnything)

        // Dropping the uplink from the configuration removes our rules and nothing else.
        let noNAT = NetworkManager(config: try NetworkConfig(netns: host))
        #expect(try noNAT.initialize(keepTAPs: nil).ruleCommands.count == 3)
        #expect(try ruleCounts(env, host).isEmpty)
        #expect(try forwardRules(env, host).count == 1)
    }

    @Test func startupRefusalsSayWhatToDo() throws {
        let env = TestNet()
        defer { env.destroy() }
        let ns = try env.namespace("hm-host")
        // A route into the default subnet (a veth pair: this kernel has no dummy links).
        try env.must(ns, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
        try env.must(ns, "ip", "addr", "add", "10.100.5.1/24", "dev", "d0")
        try env.must(ns, "ip", "link", "set", "d0", "up")
        try env.must(ns, "ip", "link", "set", "d1", "up")

        do {
            try NetworkManager(config: try NetworkConfig(netns: ns)).initialize(keepTAPs: nil)
            Issue.record("an overlapping subnet was accepted")
        } catch {
            #expect(error == .subnetOverlap(subnet: "10.100.0.0/16", route: "10.100.5.0/24", device: "d0"))
            #expect(error.description.contains("10.200.0.0/16") && error.description.contains("172.30.0.0/16"))
        }
        #expect(env.exec(ns, "ip", "link", "show", "dev", "vmbr0").status != 0, "nothing is created after a refusal")
        try NetworkManager(config: try NetworkConfig(subnetCIDR: "10.200.0.0/16", netns: ns)).initialize(keepTAPs: nil)

        // An existing bridge without our gateway.
        try env.must(ns, "ip", "link", "add", "vmbr1", "type", "bridge")
        do {
            try NetworkManager(config: try NetworkConfig(bridgeName: "vmbr1", subnetCIDR: "10.201.0.0/16", netns: ns)).initialize(keepTAPs: nil)
            Issue.record("a bridge without the gateway was accepted")
        } catch {
            guard case .bridgeConflict = error else { Issue.record("wrong error: \(error)"); return }
            #expect(error.description.contains("ip netns exec \(ns) ip addr add 10.201.0.1/16 dev vmbr1"))
        }
        // After the suggested fix it is accepted as is.
        try env.must(ns, "ip", "addr", "add", "10.201.0.1/16", "dev", "vmbr1")
        let r = try NetworkManager(config: try NetworkConfig(bridgeName: "vmbr1", subnetCIDR: "10.201.0.0/16", netns: ns)).initialize(keepTAPs: nil)
        #expect(!r.createdBridge)

        // A link of another kind under the bridge name.
        #expect(throws: NetworkError.self) {
            try NetworkManager(config: try NetworkConfig(bridgeName: "d0", subnetCIDR: "10.202.0.0/16", netns: ns)).initialize(keepTAPs: nil)
        }
        // Missing uplink, missing namespace.
        #expect(throws: NetworkError.uplinkMissing(interface: "nope0", namespace: ns)) {
            try NetworkManager(config: try NetworkConfig(subnetCIDR: "10.200.0.0/16", uplinkInterface: "nope0", netns: ns)).initialize(keepTAPs: nil)
        }
        let gone = "hm-none-\(env.tag)"
        #expect(throws: NetworkError.namespaceMissing(gone)) {
            try NetworkManager(config: try NetworkConfig(netns: gone)).initialize(keepTAPs: nil)
        }
        try NetworkManager(config: try NetworkConfig(netns: gone)).teardown()   // nothing to do, no error
    }

    static let server = """
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
    while True:
        c, a = s.accept(); c.sendall((a[0] + "\\n").encode()); c.close()
    """
    static let client = """
    import socket, sys
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
        print(c.recv(64).decode().strip())
    except Exception as e:
        print("ERR", e); sys.exit(1)
    """

    /// Connects from `ns` to addr:port; the server answers with the source address it saw.
    func connect(_ env: TestNet, _ ns: String, _ python: String, _ addr: String, _ port: Int, timeout: Double = 2, retryFor: Double = 0) -> String? {
        let deadline = Date().addingTimeInterval(retryFor)
        while true {
            let r = env.exec(ns, python, "-c", Self.client, addr, String(port), String(timeout))
            if r.status == 0 { return r.out.trimmingCharacters(in: .whitespacesAndNewlines) }
            if Date() >= deadline { return nil }
            usleep(200_000)
        }
    }

    /// Stand-in guests (veths on the bridge; TAPs carry nothing without a VM) reach a server in the
    /// uplink namespace through NAT, reach the gateway, and cannot reach each other.
    @Test(.enabled(if: python != nil, "needs /usr/bin/python3 for the TCP server and client"))
    func guestTrafficIsNATedAndIsolated() throws {
        let py = try #require(python)
        let env = TestNet()
        defer { env.destroy() }
        let (host, up) = try hostAndUplink(env)
        let ga = try env.namespace("hm-guest"), gb = try env.namespace("hm-guestb")

        let config = try NetworkConfig(uplinkInterface: "up0", netns: host)
        let m = NetworkManager(config: config)
        try m.initialize(keepTAPs: [])

        let a = try config.allocate(instanceID: "guestaaaa", takenIPs: [], takenMACs: [])
        let b = try config.allocate(instanceID: "guestbbbb", takenIPs: [a.ip.description], takenMACs: [a.mac.description])
        for (port, ns, alloc) in [("vga", ga, a), ("vgb", gb, b)] {
            try env.must(host, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            try m.attachToBridge(port)
            try env.must(ns, "ip", "link", "set", "eth0", "address", alloc.mac.description)
            try env.must(ns, "ip", "addr", "add", "\(alloc.ip)/\(alloc.prefixLength)", "dev", "eth0")
            try env.must(ns, "ip", "link", "set", "eth0", "up")
            try env.must(ns, "ip", "route", "add", "default", "via", alloc.gateway.description)
        }
        try env.background(up, [py, "-c", Self.server, "192.0.2.2", "8080"])
        try env.background(host, [py, "-c", Self.server, "10.100.0.1", "8081"])
        try env.background(gb, [py, "-c", Self.server, b.ip.description, "8082"])
        // Servers are up once they answer locally.
        #expect(connect(env, up, py, "192.0.2.2", 8080, retryFor: 5) == "192.0.2.2")
        #expect(connect(env, host, py, "10.100.0.1", 8081, retryFor: 5) == "10.100.0.1")
        #expect(connect(env, gb, py, b.ip.description, 8082, retryFor: 5) == b.ip.description)

        // The gateway is reachable directly, with the guest's own address.
        #expect(connect(env, ga, py, "10.100.0.1", 8081, retryFor: 3) == a.ip.description)
        // Guests cannot reach each other at L2 ...
        #expect(connect(env, ga, py, b.ip.description, 8082, timeout: 2) == nil)
        // ... which is the isolation: switched off, the same connection works (the check can fail) ...
        try env.must(host, "bridge", "link", "set", "dev", "vga", "isolated", "off")
        try env.must(host, "bridge", "link", "set", "dev", "vgb", "isolated", "off")
        #expect(connect(env, ga, py, b.ip.description, 8082, retryFor: 4) == a.ip.description)
        // ... and attaching again restores it.
        try m.attachToBridge("vga")
        try m.attachToBridge("vgb")
        #expect(try bridgePorts(env, host)["vga"]?.contains("isolated on") == true)
        #expect(connect(env, ga, py, b.ip.description, 8082, timeout: 2) == nil)

        // Like Docker: forwarding is dropped unless a rule accepts it, so only our rules let guests
        // out. (With br_netfilter this also drops bridged guest-to-guest traffic, hence the order.)
        try env.must(host, "iptables", "-w", "-P", "FORWARD", "DROP")
        // Through NAT: the uplink side sees the host's uplink address, not the guest's.
        #expect(connect(env, ga, py, "192.0.2.2", 8080, retryFor: 3) == "192.0.2.1")
        #expect(connect(env, gb, py, "192.0.2.2", 8080) == "192.0.2.1")

        // Without our rules, nothing gets out.
        try m.teardown()
        #expect(connect(env, ga, py, "192.0.2.2", 8080, timeout: 1) == nil)
    }
}
