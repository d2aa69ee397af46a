/// Settings of the one `default` network (contract §2.7), as a plain value.
public struct NetworkConfig: Sendable, Equatable {
    /// Linux bridge the TAPs hang off (BRIDGE_NAME, default `vmbr0`).
    public var bridgeName: String
    /// Guest subnet (SUBNET_CIDR, default `10.100.0.0/16`).
    public var subnet: IPv4Subnet
    /// Address of the bridge and the guests' default route (SUBNET_GATEWAY, default network + 1).
    public var gateway: IPv4Address
    /// DNS server written into the guests' resolv.conf (DNS_SERVER, default `1.1.1.1`).
    public var dnsServer: IPv4Address
    /// Interface towards the outside (UPLINK_INTERFACE). NAT rules are installed only when set.
    public var uplinkInterface: String?
    /// Network namespace in which the bridge, TAPs, addresses and rules live; empty = the host's.
    public var netns: String

    public init(bridgeName: String = "vmbr0", subnet: IPv4Subnet, gateway: IPv4Address? = nil,
                dnsServer: IPv4Address = IPv4Address(0x0101_0101), uplinkInterface: String? = nil,
                netns: String = "") throws(NetworkError) {
        try Self.checkInterfaceName(bridgeName, what: "bridge name (BRIDGE_NAME)")
        if let u = uplinkInterface { try Self.checkInterfaceName(u, what: "uplink interface (UPLINK_INTERFACE)") }
        if !netns.isEmpty { try Self.checkNamespaceName(netns) }
        guard subnet.prefixLength >= 8, subnet.prefixLength <= 30 else {
            throw .invalidConfig("subnet \(subnet) must be between /8 and /30 so that it holds a gateway and guests, e.g. 10.100.0.0/16")
        }
        let gw = gateway ?? subnet.firstHost
        guard subnet.contains(gw), gw != subnet.network, gw != subnet.broadcast else {
            throw .invalidConfig("gateway \(gw) (SUBNET_GATEWAY) must be a host address inside \(subnet), e.g. \(subnet.firstHost)")
        }
        if uplinkInterface == bridgeName {
            throw .invalidConfig("the uplink interface cannot be the bridge \(bridgeName) itself: name the interface of the default route")
        }
        self.bridgeName = bridgeName
        self.subnet = subnet
        self.gateway = gw
        self.dnsServer = dnsServer
        self.uplinkInterface = uplinkInterface
        self.netns = netns
    }

    /// Same, from strings as they come from the environment.
    public init(bridgeName: String = "vmbr0", subnetCIDR: String = "10.100.0.0/16", gateway: String? = nil,
                dnsServer: String = "1.1.1.1", uplinkInterface: String? = nil, netns: String = "") throws(NetworkError) {
        let subnet = try IPv4Subnet(cidr: subnetCIDR)
        var gw: IPv4Address?
        if let g = gateway {
            guard let a = IPv4Address(g) else { throw .invalidConfig("gateway \"\(g)\" (SUBNET_GATEWAY) is not an IPv4 address") }
            gw = a
        }
        guard let dns = IPv4Address(dnsServer) else {
            throw .invalidConfig("DNS server \"\(dnsServer)\" (DNS_SERVER) is not an IPv4 address, e.g. 1.1.1.1")
        }
        try self.init(bridgeName: bridgeName, subnet: subnet, gateway: gw, dnsServer: dns,
                      uplinkInterface: uplinkInterface, netns: netns)
    }

    /// Reads BRIDGE_NAME, SUBNET_CIDR, SUBNET_GATEWAY, DNS_SERVER, UPLINK_INTERFACE and
    /// NETWORK_NETNS (all optional; empty counts as unset).
    public static func fromEnvironment(_ env: [String: String]) throws(NetworkError) -> NetworkConfig {
        func v(_ k: String) -> String? { env[k].flatMap { $0.isEmpty ? nil : $0 } }
        return try NetworkConfig(bridgeName: v("BRIDGE_NAME") ?? "vmbr0", subnetCIDR: v("SUBNET_CIDR") ?? "10.100.0.0/16",
                                 gateway: v("SUBNET_GATEWAY"), dnsServer: v("DNS_SERVER") ?? "1.1.1.1",
                                 uplinkInterface: v("UPLINK_INTERFACE"), netns: v("NETWORK_NETNS") ?? "")
    }

    /// Prefix to run a program in the configured namespace (e.g. the VMM, which must open the TAP
    /// in the namespace that holds it): `[]` or `["ip", "netns", "exec", netns]`.
    public var commandPrefix: [String] { netns.isEmpty ? [] : ["ip", "netns", "exec", netns] }

    static let nameBytes: Set<UInt8> = Set(Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-".utf8))

    /// Linux interface names: 1–15 bytes; we also keep to [A-Za-z0-9._-] and no leading '-'.
    static func checkInterfaceName(_ name: String, what: String) throws(NetworkError) {
        let ok = !name.isEmpty && name.utf8.count <= 15 && name.utf8.allSatisfy { nameBytes.contains($0) }
            && !name.hasPrefix("-") && name != "." && name != ".." && name != "all" && name != "default"
        guard ok else {
            throw .invalidConfig("\(what) \"\(name)\" is not a usable interface name: 1 to 15 characters of A-Z a-z 0-9 . _ -, not starting with -")
        }
    }

    static func checkNamespaceName(_ name: String) throws(NetworkError) {
        let ok = name.utf8.count <= 64 && name.utf8.allSatisfy { nameBytes.contains($0) }
            && !name.hasPrefix("-") && name != "." && name != ".."
        guard ok else {
            throw .invalidConfig("network namespace \"\(name)\" is not a usable name: up to 64 characters of A-Z a-z 0-9 . _ -")
        }
    }
}
