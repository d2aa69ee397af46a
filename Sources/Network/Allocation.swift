import Foundation

/// What an instance gets on the network: everything the VMM (`tap`, `mac`, `ip`, `netmask`) and
/// the guest config (`ip`, `prefixLength`, `gateway`, `dns`) need.
public struct NetworkAllocation: Sendable, Equatable {
    public var tap: String
    public var ip: IPv4Address
    public var mac: MACAddress
    public var prefixLength: Int
    public var netmask: IPv4Address
    public var gateway: IPv4Address
    public var dns: IPv4Address

    public init(tap: String, ip: IPv4Address, mac: MACAddress, prefixLength: Int, netmask: IPv4Address,
                gateway: IPv4Address, dns: IPv4Address) {
        self.tap = tap; self.ip = ip; self.mac = mac; self.prefixLength = prefixLength
        self.netmask = netmask; self.gateway = gateway; self.dns = dns
    }
}

/// Pure allocation logic. The allocation state lives in the caller's database: the caller passes
/// what is taken and stores what comes back, under its own lock.
public enum Allocator {
    /// Random tries before the sequential scan.
    public static let randomIPTries = 5
    public static let randomMACTries = 16

    /// Picks a guest address: up to `randomIPTries` random host offsets, then a scan from the
    /// bottom. Never the network address, the gateway, the broadcast address or a taken one.
    public static func allocateIP(in subnet: IPv4Subnet, gateway: IPv4Address, taken: Set<IPv4Address>,
                                  using rng: inout some RandomNumberGenerator) throws(NetworkError) -> IPv4Address {
        guard subnet.size >= 4 else { throw .exhausted("subnet \(subnet) has no room for guests: use a /30 or larger") }
        let last = subnet.size - 2   // broadcast is size - 1
        func free(_ offset: UInt64) -> IPv4Address? {
            let a = subnet.address(at: offset)
            return a == gateway || taken.contains(a) ? nil : a
        }
        for _ in 0..<randomIPTries {
            if let a = free(UInt64.random(in: 1...last, using: &rng)) { return a }
        }
        var offset: UInt64 = 1
        while offset <= last {
            if let a = free(offset) { return a }
            offset += 1
        }
        throw .exhausted("no free address left in \(subnet) (\(taken.count) taken): delete stopped instances or configure a larger SUBNET_CIDR")
    }

    /// Picks `02:00:00:xx:xx:xx` not in `taken`: random tries, then a scan.
    public static func allocateMAC(taken: Set<MACAddress>, using rng: inout some RandomNumberGenerator) throws(NetworkError) -> MACAddress {
        func mac(_ n: UInt32) -> MACAddress? {
            MACAddress(bytes: [0x02, 0, 0, UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)])
        }
        for _ in 0..<randomMACTries {
            if let m = mac(UInt32.random(in: 1...0xff_fffe, using: &rng)), !taken.contains(m) { return m }
        }
        for n in UInt32(1)...0xff_fffe {
            if let m = mac(n), !taken.contains(m) { return m }
        }
        throw .exhausted("no free MAC address left in 02:00:00:xx:xx:xx")
    }

    /// `hype-` + the first 8 characters of the instance id, lowercased (at most 13 bytes).
    public static func tapName(forInstanceID id: String) throws(NetworkError) -> String {
        let head = String(id.prefix(8)).lowercased()
        let allowed = Set(Array("abcdefghijklmnopqrstuvwxyz0123456789_-".utf8))
        guard !head.isEmpty, head.utf8.count == head.count, head.utf8.allSatisfy({ allowed.contains($0) }) else {
            throw .invalidConfig("instance id \"\(id)\" cannot name a TAP: its first 8 characters must be a-z, 0-9, _ or -")
        }
        return tapPrefix + head
    }

    public static let tapPrefix = "hype-"
}

extension NetworkConfig {
    /// Chooses IP, MAC and TAP name for `instanceID`, given what other instances hold.
    public func allocate(instanceID: String, takenIPs: Set<IPv4Address>, takenMACs: Set<MACAddress>,
                         using rng: inout some RandomNumberGenerator) throws(NetworkError) -> NetworkAllocation {
        let tap = try Allocator.tapName(forInstanceID: instanceID)
        let ip = try Allocator.allocateIP(in: subnet, gateway: gateway, taken: takenIPs, using: &rng)
        let mac = try Allocator.allocateMAC(taken: takenMACs, using: &rng)
        return NetworkAllocation(tap: tap, ip: ip, mac: mac, prefixLength: subnet.prefixLength, netmask: subnet.netmask,
                                 gateway: gateway, dns: dnsServer)
    }

    /// Same with the system RNG and the taken values as stored strings (unreadable ones are ignored:
    /// they cannot equal an address we would hand out).
    public func allocate(instanceID: String, takenIPs: some Sequence<String>, takenMACs: some Sequence<String>) throws(NetworkError) -> NetworkAllocation {
        var rng = SystemRandomNumberGenerator()
        return try allocate(instanceID: instanceID, takenIPs: Set(takenIPs.compactMap { IPv4Address($0.trimmingCharacters(in: .whitespacesAndNewlines)) }),
                            takenMACs: Set(takenMACs.compactMap { MACAddress($0.trimmingCharacters(in: .whitespacesAndNewlines)) }), using: &rng)
    }
}
