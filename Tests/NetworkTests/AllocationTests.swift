import Testing
@testable import Network

/// Deterministic generator for repeatable allocation tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Always yields the same number, so every random try lands on the same candidate: the top of
/// the range (UInt64.max is never rejected by the bounded sampling; 0 would be, forever).
struct StuckRNG: RandomNumberGenerator {
    mutating func next() -> UInt64 { .max }
}

@Suite struct AllocationTests {
    @Test func ipNeverNetworkGatewayBroadcastOrTaken() throws {
        let s = try IPv4Subnet(cidr: "10.100.0.0/24")
        let gw = s.firstHost
        var rng = SplitMix64(state: 7)
        var taken: Set<IPv4Address> = []
        for _ in 0..<253 {
            let ip = try Allocator.allocateIP(in: s, gateway: gw, taken: taken, using: &rng)
            #expect(s.contains(ip))
            #expect(ip != s.network && ip != gw && ip != s.broadcast)
            #expect(!taken.contains(ip))
            taken.insert(ip)
        }
        #expect(taken.count == 253)   // every host address except the gateway
        #expect(throws: NetworkError.self) { _ = try Allocator.allocateIP(in: s, gateway: gw, taken: taken, using: &rng) }
    }

    @Test func ipIsRandomNotSequential() throws {
        let s = try IPv4Subnet(cidr: "10.100.0.0/16")
        var rng = SplitMix64(state: 42)
        let picks = try (0..<20).map { _ in try Allocator.allocateIP(in: s, gateway: s.firstHost, taken: [], using: &rng) }
        #expect(Set(picks).count > 15, "random picks over a /16 should rarely repeat")
        #expect(picks.contains { $0.value > s.network.value + 300 }, "picks should spread over the subnet")
        // Same seed, same answer: the function is pure.
        var again = SplitMix64(state: 42)
        #expect(try Allocator.allocateIP(in: s, gateway: s.firstHost, taken: [], using: &again) == picks[0])
    }

    @Test func ipFallsBackToScanWhenRandomTriesCollide() throws {
        let s = try IPv4Subnet(cidr: "10.100.0.0/16")
        var stuck = StuckRNG()
        let first = try Allocator.allocateIP(in: s, gateway: s.firstHost, taken: [], using: &stuck)
        #expect(first.description == "10.100.255.254")
        // Take that one: all random tries hit it again, so the scan from the bottom answers
        // (skipping the gateway at .1).
        let second = try Allocator.allocateIP(in: s, gateway: s.firstHost, taken: [first], using: &stuck)
        #expect(second.description == "10.100.0.2")
    }

    @Test func ipWithCustomGatewayAndTinySubnet() throws {
        let s30 = try IPv4Subnet(cidr: "172.30.0.4/30")
        var rng = SplitMix64(state: 1)
        for _ in 0..<10 {
            #expect(try Allocator.allocateIP(in: s30, gateway: s30.firstHost, taken: [], using: &rng).description == "172.30.0.6")
        }
        // Gateway at .6 leaves .5 free.
        let gw = try #require(IPv4Address("172.30.0.6"))
        #expect(try Allocator.allocateIP(in: s30, gateway: gw, taken: [], using: &rng).description == "172.30.0.5")
        #expect(throws: NetworkError.self) {
            _ = try Allocator.allocateIP(in: s30, gateway: gw, taken: [try #require(IPv4Address("172.30.0.5"))], using: &rng)
        }
    }

    @Test func macsAreLocalUniqueAndAvoidTaken() throws {
        var rng = SplitMix64(state: 3)
        var taken: Set<MACAddress> = []
        for _ in 0..<2000 {
            let m = try Allocator.allocateMAC(taken: taken, using: &rng)
            #expect(m.description.hasPrefix("02:00:00:"))
            #expect(m.isLocalUnicast)
            #expect(!taken.contains(m))
            taken.insert(m)
        }
        var stuck = StuckRNG()
        let a = try Allocator.allocateMAC(taken: [], using: &stuck)
        let b = try Allocator.allocateMAC(taken: [a], using: &stuck)
        #expect(a.description == "02:00:00:ff:ff:fe")
        #expect(b.description == "02:00:00:00:00:01")
    }

    @Test func tapNames() throws {
        #expect(try Allocator.tapName(forInstanceID: "k3v9q0b2x7m4n8p1r5s6t0wz") == "hype-k3v9q0b2")
        #expect(try Allocator.tapName(forInstanceID: "K3V9Q0B2X7") == "hype-k3v9q0b2")
        #expect(try Allocator.tapName(forInstanceID: "abc") == "hype-abc")
        for id in ["k3v9q0b2x7m4n8p1r5s6t0wz", "abcdefghijklmnopqrstuvwx", "a", "zzzzzzzz"] {
            let n = try Allocator.tapName(forInstanceID: id)
            #expect(n.utf8.count <= 15)
            #expect(n.hasPrefix("hype-"))
        }
        for bad in ["", "ab/cd", "a b", "é1234567", "a:b"] {
            #expect(throws: NetworkError.self, "\(bad)") { _ = try Allocator.tapName(forInstanceID: bad) }
        }
    }

    @Test func allocateGivesEverythingTheVMMAndGuestNeed() throws {
        let c = try NetworkConfig(subnetCIDR: "10.100.0.0/16")
        var rng = SplitMix64(state: 9)
        let a = try c.allocate(instanceID: "k3v9q0b2x7m4n8p1r5s6t0wz", takenIPs: [], takenMACs: [], using: &rng)
        #expect(a.tap == "hype-k3v9q0b2")
        #expect(a.prefixLength == 16)
        #expect(a.netmask.description == "255.255.0.0")
        #expect(a.gateway.description == "10.100.0.1")
        #expect(a.dns.description == "1.1.1.1")
        #expect(c.subnet.contains(a.ip))

        // String form: what the database stores. Taken values are respected.
        let full = try NetworkConfig(subnetCIDR: "10.9.9.0/30")
        let b = try full.allocate(instanceID: "x1", takenIPs: [], takenMACs: ["02:00:00:00:00:01"])
        #expect(b.ip.description == "10.9.9.2")
        #expect(b.mac.description != "02:00:00:00:00:01")
        #expect(throws: NetworkError.self) { _ = try full.allocate(instanceID: "x2", takenIPs: ["10.9.9.2 "], takenMACs: []) }
    }
}
