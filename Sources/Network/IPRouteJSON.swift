import Foundation

/// Readers for `ip -j …` output (iproute2 JSON), kept pure for tests.
enum IPRouteJSON {
    struct Route: Sendable, Equatable {
        var dst: String
        var dev: String?
        var type: String?
    }

    struct Link: Sendable, Equatable {
        var name: String
        var kind: String?
        var master: String?
    }

    struct Address: Sendable, Equatable {
        var local: IPv4Address
        var prefixLength: Int
    }

    static func array(_ text: String, command: String) throws(NetworkError) -> [[String: Any]] {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty { return [] }   // some iproute2 versions print nothing for an empty list
        let parsed: Any
        do { parsed = try JSONSerialization.jsonObject(with: Data(trimmed.utf8)) } catch {
            throw .unexpectedOutput(command: command, detail: "not JSON: \(trimmed.prefix(200))")
        }
        guard let arr = parsed as? [Any] else { throw .unexpectedOutput(command: command, detail: "not a JSON array") }
        return arr.compactMap { $0 as? [String: Any] }
    }

    static func routes(_ text: String, command: String = "ip -j -4 route show") throws(NetworkError) -> [Route] {
        try array(text, command: command).compactMap { o in
            guard let dst = o["dst"] as? String else { return nil }
            return Route(dst: dst, dev: o["dev"] as? String, type: o["type"] as? String)
        }
    }

    static func links(_ text: String, command: String = "ip -j -d link show") throws(NetworkError) -> [Link] {
        try array(text, command: command).compactMap { o in
            guard let name = o["ifname"] as? String else { return nil }
            let info = o["linkinfo"] as? [String: Any]
            return Link(name: name, kind: info?["info_kind"] as? String, master: o["master"] as? String)
        }
    }

    static func addresses(_ text: String, command: String = "ip -j -4 addr show") throws(NetworkError) -> [Address] {
        var out: [Address] = []
        for o in try array(text, command: command) {
            for a in (o["addr_info"] as? [[String: Any]]) ?? [] where (a["family"] as? String ?? "inet") == "inet" {
                guard let l = a["local"] as? String, let ip = IPv4Address(l), let p = a["prefixlen"] as? Int else { continue }
                out.append(Address(local: ip, prefixLength: p))
            }
        }
        return out
    }

    /// The first route (other than the default route and routes on `bridge`) whose destination
    /// shares an address with `subnet`.
    static func overlappingRoute(_ routes: [Route], subnet: IPv4Subnet, bridge: String) -> Route? {
        routes.first { r in
            guard r.dst != "default", r.dev != bridge, let net = Self.destination(r.dst) else { return false }
            return net.overlaps(subnet)
        }
    }

    /// `10.0.0.0/8`, or a bare host address as /32. A destination with host bits set is read as
    /// its network.
    static func destination(_ dst: String) -> IPv4Subnet? {
        let parts = dst.split(separator: "/")
        guard let a = IPv4Address(String(parts[0])) else { return nil }
        let prefix = parts.count == 2 ? Int(parts[1]) ?? -1 : 32
        guard (0...32).contains(prefix) else { return nil }
        return try? IPv4Subnet(network: IPv4Address(a.value & IPv4Subnet.mask(prefix)), prefixLength: prefix)
    }
}
