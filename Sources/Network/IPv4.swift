/// An IPv4 address as a 32-bit number in host order, written and read in dotted-quad form.
public struct IPv4Address: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses `a.b.c.d` (decimal, no leading zeros, no surrounding text); nil otherwise.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            if p.count > 1 && p.first == "0" { return nil }
            guard let octet = UInt32(p), octet <= 255 else { return nil }
            v = v << 8 | octet
        }
        value = v
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }
}

/// An IPv4 network in CIDR form. The address must be the network address (host bits zero).
public struct IPv4Subnet: Sendable, Hashable, CustomStringConvertible {
    public let network: IPv4Address
    public let prefixLength: Int

    /// Any prefix 0...32; host bits must be zero.
    public init(network: IPv4Address, prefixLength: Int) throws(NetworkError) {
        guard (0...32).contains(prefixLength) else {
            throw .invalidConfig("prefix length /\(prefixLength) is out of range: use /0 to /32")
        }
        let mask = Self.mask(prefixLength)
        guard network.value & ~mask == 0 else {
            throw .invalidConfig("\(network)/\(prefixLength) has host bits set: use the network address \(IPv4Address(network.value & mask))/\(prefixLength)")
        }
        self.network = network
        self.prefixLength = prefixLength
    }

    /// Parses `a.b.c.d/n`.
    public init(cidr: String) throws(NetworkError) {
        let parts = cidr.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let addr = IPv4Address(String(parts[0])) else {
            throw .invalidConfig("\"\(cidr)\" is not an IPv4 CIDR: write it like 10.100.0.0/16")
        }
        let p = parts[1]
        guard !p.isEmpty, p.count <= 2, p.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let prefix = Int(p) else {
            throw .invalidConfig("\"\(cidr)\" has a bad prefix length: write it like 10.100.0.0/16")
        }
        try self.init(network: addr, prefixLength: prefix)
    }

    static func mask(_ prefix: Int) -> UInt32 {
        prefix == 0 ? 0 : UInt32.max << UInt32(32 - prefix)
    }

    /// Number of addresses, network and broadcast included (2^(32-prefix)).
    public var size: UInt64 { UInt64(1) << UInt64(32 - prefixLength) }
    public var netmask: IPv4Address { IPv4Address(Self.mask(prefixLength)) }
    public var broadcast: IPv4Address { IPv4Address(network.value | ~Self.mask(prefixLength)) }
    /// network + 1: the default gateway.
    public var firstHost: IPv4Address { IPv4Address(network.value &+ 1) }

    public func contains(_ a: IPv4Address) -> Bool {
        a.value & Self.mask(prefixLength) == network.value
    }

    /// True if the two networks share at least one address (one contains the other).
    public func overlaps(_ other: IPv4Subnet) -> Bool {
        let m = Self.mask(min(prefixLength, other.prefixLength))
        return network.value & m == other.network.value & m
    }

    /// The address at `offset` from the network address (offset < size).
    public func address(at offset: UInt64) -> IPv4Address {
        IPv4Address(network.value &+ UInt32(truncatingIfNeeded: offset))
    }

    public var description: String { "\(network)/\(prefixLength)" }
}

/// A MAC address, written lowercase with colons.
public struct MACAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (either case).
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard p.count == 2, let b = UInt8(p, radix: 16) else { return nil }
            out.append(b)
        }
        bytes = out
    }

    public var description: String {
        bytes.map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: ":")
    }

    /// Locally administered (bit 1 of the first octet) and unicast (bit 0 clear).
    public var isLocalUnicast: Bool { bytes[0] & 0x03 == 0x02 }
}
