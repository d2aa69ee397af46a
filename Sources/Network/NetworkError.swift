import Foundation

/// Host-networking failures. Each description says what failed and what to do about it.
public enum NetworkError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A setting is malformed or inconsistent; the message names it and the fix.
    case invalidConfig(String)
    /// A program is not installed: install the Debian `package`.
    case toolMissing(tool: String, package: String)
    /// A command ran and failed. `output` is its stderr (or stdout when stderr was empty).
    case commandFailed(command: String, status: Int32, output: String, hint: String)
    /// A command printed something we could not read.
    case unexpectedOutput(command: String, detail: String)
    /// The configured network namespace does not exist.
    case namespaceMissing(String)
    /// A route in the namespace overlaps the guest subnet.
    case subnetOverlap(subnet: String, route: String, device: String)
    /// net.ipv4.ip_forward is 0 where we may not change it.
    case ipForwardDisabled(namespace: String)
    /// The bridge name is taken by something we cannot use as is.
    case bridgeConflict(bridge: String, problem: String, fix: String)
    /// The uplink interface named in the configuration does not exist.
    case uplinkMissing(interface: String, namespace: String)
    /// No free address is left.
    case exhausted(String)

    public var description: String {
        switch self {
        case .invalidConfig(let m):
            return m
        case .toolMissing(let tool, let package):
            return "\(tool) not found in PATH, /usr/sbin or /sbin: install it with apt-get install \(package)"
        case .commandFailed(let command, let status, let output, let hint):
            let text = output.trimmingCharacters(in: .whitespacesAndNewlines)
            let shown = text.isEmpty ? "no output" : String(text.suffix(2000))
            return "`\(command)` failed (exit \(status)): \(shown)\(hint.isEmpty ? "" : " — \(hint)")"
        case .unexpectedOutput(let command, let detail):
            return "cannot read the output of `\(command)`: \(detail) — check that iproute2/iptables are the Debian 12 versions or newer"
        case .namespaceMissing(let ns):
            return "network namespace \(ns) does not exist: create it with `ip netns add \(ns)`, or leave the namespace setting empty to use the host's"
        case .subnetOverlap(let subnet, let route, let device):
            return "the guest subnet \(subnet) overlaps the existing route \(route) (\(device)): pick a subnet that no route uses, "
                + "e.g. SUBNET_CIDR=10.200.0.0/16 or SUBNET_CIDR=172.30.0.0/16 (see `ip route`)"
        case .ipForwardDisabled(let ns):
            let exec = ns.isEmpty ? "" : "ip netns exec \(ns) "
            return "IPv4 forwarding is off\(ns.isEmpty ? "" : " in namespace \(ns)"), so guests cannot reach the uplink: run `\(exec)sysctl -w net.ipv4.ip_forward=1` "
                + "and make it permanent with `echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-hypeman.conf`"
        case .bridgeConflict(let bridge, let problem, let fix):
            return "bridge \(bridge): \(problem) — \(fix)"
        case .uplinkMissing(let interface, let ns):
            return "uplink interface \(interface) does not exist\(ns.isEmpty ? "" : " in namespace \(ns)"): set UPLINK_INTERFACE to the interface "
                + "of the default route (`ip route show default`), or leave it empty to run without NAT"
        case .exhausted(let m):
            return m
        }
    }
}
