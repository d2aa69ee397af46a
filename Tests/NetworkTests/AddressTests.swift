import Testing
@testable import Network

@Suite struct AddressTests {
    @Test func ipv4ParsesAndPrints() throws {
        let a = try #require(IPv4Address("10.100.0.1"))
        #expect(a.value == 0x0A64_0001)
        #expect(a.description == "10.100.0.1")
        #expect(IPv4Address(0xFFFF_FFFF).description == "255.255.255.255")
        #expect(IPv4Address("0.0.0.0")?.value == 0)
        for bad in ["256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "a.b.c.d", "1..2.3", "", " 1.2.3.4", "1.2.3.4/8", "-1.2.3.4", "1234.1.1.1"] {
            #expect(IPv4Address(bad) == nil, "\(bad) should not parse")
        }
    }

    @Test func subnetMath() throws {
        let s = try IPv4Subnet(cidr: "10.100.0.0/16")
        #expect(s.network.description == "10.100.0.0")
        #expect(s.prefixLength == 16)
        #expect(s.size == 65536)
        #expect(s.netmask.description == "255.255.0.0")
        #expect(s.broadcast.description == "10.100.255.255")
        #expect(s.firstHost.description == "10.100.0.1")
        #expect(s.contains(try #require(IPv4Address("10.100.255.7"))))
        #expect(!s.contains(try #require(IPv4Address("10.101.0.1"))))
        #expect(s.address(at: 258).description == "10.100.1.2")

        let s24 = try IPv4Subnet(cidr: "192.168.7.0/24")
        #expect(s24.netmask.description == "255.255.255.0")
        #expect(s24.broadcast.description == "192.168.7.255")
        let s30 = try IPv4Subnet(cidr: "172.30.0.4/30")
        #expect(s30.size == 4)
        #expect(s30.broadcast.description == "172.30.0.7")
        #expect(try IPv4Subnet(cidr: "0.0.0.0/0").size == 1 << 32)
    }

    @Test func subnetRejectsBadCIDRs() {
        for bad in ["10.100.0.1/16", "10.100.0.0", "10.100.0.0/33", "10.100.0.0/", "10.100.0.0/a", "x/16", "10.100.0.0/16/2", "10.100.0.0/-1"] {
            #expect(throws: NetworkError.self, "\(bad) should be rejected") { _ = try IPv4Subnet(cidr: bad) }
        }
        do {
            _ = try IPv4Subnet(cidr: "10.100.0.1/16")
            Issue.record("host bits accepted")
        } catch {
            #expect(error.description.contains("10.100.0.0/16"), "the error should suggest the network address")
        }
    }

    @Test func overlap() throws {
        let s = try IPv4Subnet(cidr: "10.100.0.0/16")
        let yes = ["10.100.5.0/24", "10.0.0.0/8", "0.0.0.0/1", "10.100.0.0/16", "10.100.255.255/32", "10.100.0.0/15"]
        let no = ["10.101.0.0/16", "10.99.0.0/16", "192.168.0.0/16", "128.0.0.0/1", "10.102.0.0/15"]
        for c in yes { #expect(s.overlaps(try IPv4Subnet(cidr: c)), "\(c) overlaps") }
        for c in no { #expect(!s.overlaps(try IPv4Subnet(cidr: c)), "\(c) does not overlap") }
    }

    @Test func macParsesAndPrints() throws {
        let m = try #require(MACAddress("02:00:00:AB:0c:ff"))
        #expect(m.description == "02:00:00:ab:0c:ff")
        #expect(m.isLocalUnicast)
        #expect(MACAddress("00:11:22:33:44:55")?.isLocalUnicast == false)
        for bad in ["02:00:00:ab:0c", "02:00:00:ab:0c:ff:00", "02-00-00-ab-0c-ff", "2:00:00:ab:0c:ff", "zz:00:00:00:00:00", ""] {
            #expect(MACAddress(bad) == nil, "\(bad) should not parse")
        }
    }

    @Test func configDefaults() throws {
        let c = try NetworkConfig()
        #expect(c.bridgeName == "vmbr0")
        #expect(c.subnet.description == "10.100.0.0/16")
        #expect(c.gateway.description == "10.100.0.1")
        #expect(c.dnsServer.description == "1.1.1.1")
        #expect(c.uplinkInterface == nil)
        #expect(c.netns == "")
        #expect(c.commandPrefix == [])
        let n = try NetworkConfig(subnetCIDR: "172.30.0.0/16", gateway: "172.30.9.9", dnsServer: "9.9.9.9", uplinkInterface: "eth0", netns: "hm-x")
        #expect(n.gateway.description == "172.30.9.9")
        #expect(n.dnsServer.description == "9.9.9.9")
        #expect(n.commandPrefix == ["ip", "netns", "exec", "hm-x"])
    }

    @Test func configFromEnvironment() throws {
        let c = try NetworkConfig.fromEnvironment(["BRIDGE_NAME": "br9", "SUBNET_CIDR": "10.200.0.0/16", "SUBNET_GATEWAY": "",
                                                   "UPLINK_INTERFACE": "ens3", "NETWORK_NETNS": "lab"])
        #expect(c.bridgeName == "br9")
        #expect(c.gateway.description == "10.200.0.1")
        #expect(c.uplinkInterface == "ens3")
        #expect(c.netns == "lab")
        #expect(try NetworkConfig.fromEnvironment([:]) == NetworkConfig())
    }

    @Test func configRejectsNonsense() {
        let cases: [() throws -> NetworkConfig] = [
            { try NetworkConfig(bridgeName: "abcdefghijklmnop") },        // 16 bytes
            { try NetworkConfig(bridgeName: "br/0") },
            { try NetworkConfig(bridgeName: "-br") },
            { try NetworkConfig(bridgeName: "") },
            { try NetworkConfig(bridgeName: "br 0") },
            { try NetworkConfig(subnetCIDR: "10.100.0.0/31") },
            { try NetworkConfig(subnetCIDR: "10.0.0.0/7") },
            { try NetworkConfig(gateway: "10.101.0.1") },                 // outside
            { try NetworkConfig(gateway: "10.100.0.0") },                 // network address
            { try NetworkConfig(gateway: "10.100.255.255") },             // broadcast
            { try NetworkConfig(gateway: "gw") },
            { try NetworkConfig(dnsServer: "one.one") },
            { try NetworkConfig(uplinkInterface: "vmbr0") },             // the bridge itself
            { try NetworkConfig(uplinkInterface: "eth0;x") },
            { try NetworkConfig(netns: "../etc") },
        ]
        for (i, make) in cases.enumerated() {
            #expect(throws: NetworkError.self, "case \(i)") { _ = try make() }
        }
    }

    @Test func errorsSayWhatToDo() {
        #expect(NetworkError.subnetOverlap(subnet: "10.100.0.0/16", route: "10.100.3.0/24", device: "eth1").description.contains("10.200.0.0/16"))
        #expect(NetworkError.subnetOverlap(subnet: "10.100.0.0/16", route: "10.100.3.0/24", device: "eth1").description.contains("172.30.0.0/16"))
        #expect(NetworkError.ipForwardDisabled(namespace: "").description.contains("sysctl -w net.ipv4.ip_forward=1"))
        #expect(NetworkError.ipForwardDisabled(namespace: "lab").description.contains("ip netns exec lab sysctl"))
        #expect(NetworkError.toolMissing(tool: "iptables", package: "iptables").description.contains("apt-get install iptables"))
        #expect(NetworkError.namespaceMissing("lab").description.contains("ip netns add lab"))
        let failed = NetworkError.commandFailed(command: "ip link add", status: 2, output: "RTNETLINK answers: File exists\n", hint: "pick another name")
        #expect(failed.description == "`ip link add` failed (exit 2): RTNETLINK answers: File exists — pick another name")
    }
}
