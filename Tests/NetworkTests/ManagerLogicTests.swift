import Foundation
import Testing
@testable import Network

/// Records commands and answers from a table keyed by the command line (without the
/// `ip netns exec <ns>` prefix). Unknown commands succeed silently.
final class FakeRunner: CommandRunner, @unchecked Sendable {
    private let lock = NSLock()
    private var answers: [String: CommandResult]
    private(set) var log: [String] = []

    init(_ answers: [String: CommandResult]) { self.answers = answers }

    func locate(_ tool: String) throws(NetworkError) -> String { tool }

    func run(_ executable: String, _ arguments: [String]) throws(NetworkError) -> CommandResult {
        var argv = [executable] + arguments
        if argv.count > 4, argv[0] == "ip", argv[1] == "netns", argv[2] == "exec" { argv = Array(argv[4...]) }
        let line = argv.joined(separator: " ")
        lock.lock(); defer { lock.unlock() }
        log.append(line)
        return answers[line] ?? CommandResult(status: 0, stdout: "", stderr: "")
    }

    var commands: [String] { lock.lock(); defer { lock.unlock() }; return log }
}

func ok(_ out: String) -> CommandResult { CommandResult(status: 0, stdout: out, stderr: "") }

let bridgeJSON = #"[{"ifindex":2,"ifname":"vmbr0","linkinfo":{"info_kind":"bridge"}}]"#
let gatewayJSON = #"[{"ifname":"vmbr0","addr_info":[{"family":"inet","local":"10.100.0.1","prefixlen":16}]}]"#

func hostAnswers(forward: String = "0\n", addr: String = gatewayJSON, link: String = bridgeJSON) -> [String: CommandResult] {
    [
        "ip netns list": ok("other\nlab (id: 3)\n"),
        "ip -j -4 route show": ok(#"[{"dst":"default","gateway":"192.0.2.2","dev":"eth0"}]"#),
        "ip -j -d link show dev vmbr0": ok(link),
        "ip -j -4 addr show dev vmbr0": ok(addr),
        "sysctl -n net.ipv4.ip_forward": ok(forward),
    ]
}

@Suite struct ManagerLogicTests {
    @Test func hostNamespaceForwardingIsOnlyChecked() throws {
        let fake = FakeRunner(hostAnswers())
        let m = NetworkManager(config: try NetworkConfig(), runner: fake)
        #expect(throws: NetworkError.ipForwardDisabled(namespace: "")) { try m.initialize(keepTAPs: nil) }
        #expect(!fake.commands.contains { $0.hasPrefix("sysctl -w") }, "must not change the host's sysctl")
        #expect(!fake.commands.contains("ip netns list"), "no namespace configured")
    }

    @Test func ownNamespaceForwardingIsSwitchedOn() throws {
        let fake = FakeRunner(hostAnswers())
        let m = NetworkManager(config: try NetworkConfig(netns: "lab"), runner: fake)
        let report = try m.initialize(keepTAPs: nil)
        #expect(report.enabledIPForward)
        #expect(!report.createdBridge)
        #expect(fake.commands.contains("sysctl -w net.ipv4.ip_forward=1"))
        #expect(fake.commands.contains("ip link set dev vmbr0 up"))
        // No uplink: our rules are only looked for (and would be removed), none added.
        #expect(!fake.commands.contains { $0.contains(" -I ") || $0.contains(" -A ") })
    }

    @Test func alreadyRightHostChangesNothing() throws {
        let fake = FakeRunner(hostAnswers(forward: "1\n"))
        let report = try NetworkManager(config: try NetworkConfig(), runner: fake).initialize(keepTAPs: nil)
        #expect(!report.changedAnything)
    }

    @Test func missingNamespaceIsReported() throws {
        let fake = FakeRunner(hostAnswers())
        let m = NetworkManager(config: try NetworkConfig(netns: "nope"), runner: fake)
        #expect(throws: NetworkError.namespaceMissing("nope")) { try m.initialize(keepTAPs: nil) }
        #expect(fake.commands == ["ip netns list"])
    }

    @Test func bridgeWithoutGatewayIsRefusedWithAdvice() throws {
        let fake = FakeRunner(hostAnswers(addr: #"[{"ifname":"vmbr0","addr_info":[{"family":"inet","local":"10.100.0.1","prefixlen":24}]}]"#))
        do {
            try NetworkManager(config: try NetworkConfig(), runner: fake).initialize(keepTAPs: nil)
            Issue.record("accepted a bridge with the wrong prefix")
        } catch {
            guard case .bridgeConflict = error else { Issue.record("wrong error \(error)"); return }
            #expect(error.description.contains("ip addr add 10.100.0.1/16 dev vmbr0"))
            #expect(error.description.contains("10.100.0.1/24"))
        }
    }

    @Test func nonBridgeWithBridgeNameIsRefused() throws {
        let fake = FakeRunner(hostAnswers(link: #"[{"ifindex":2,"ifname":"vmbr0","linkinfo":{"info_kind":"dummy"}}]"#))
        #expect(throws: NetworkError.self) { try NetworkManager(config: try NetworkConfig(), runner: fake).initialize(keepTAPs: nil) }
        #expect(!fake.commands.contains { $0.hasPrefix("ip link set dev vmbr0") })
    }

    @Test func tapNamesOutsideOurPrefixAreRefused() throws {
        let fake = FakeRunner([:])
        let m = NetworkManager(config: try NetworkConfig(), runner: fake)
        #expect(throws: NetworkError.self) { try m.deleteTAP(name: "eth0") }
        #expect(throws: NetworkError.self) { try m.createTAP(name: "vmbr0") }
        #expect(throws: NetworkError.self) { try m.createTAP(name: "hype-0123456789a") }   // 16 bytes
        #expect(fake.commands.isEmpty)
    }
}
