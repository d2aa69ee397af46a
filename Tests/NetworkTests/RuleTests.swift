import Testing
@testable import Network

@Suite struct RuleTests {
    let subnet: IPv4Subnet
    let desired: [DesiredRule]
    init() throws {
        subnet = try IPv4Subnet(cidr: "10.100.0.0/16")
        desired = HypemanRules.desired(bridge: "vmbr0", subnet: subnet, uplink: "eth0")
    }

    // What iptables-nft 1.8.9 prints for our rules (checked on Debian 12).
    let natLine = "-A POSTROUTING -s 10.100.0.0/16 -o eth0 -m comment --comment hypeman-nat -j MASQUERADE"
    let outLine = "-A FORWARD -i vmbr0 -o eth0 -m conntrack --ctstate NEW,RELATED,ESTABLISHED -m comment --comment hypeman-fwd-out -j ACCEPT"
    let inLine = "-A FORWARD -i eth0 -o vmbr0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment hypeman-fwd-in -j ACCEPT"
    let docker = "-A FORWARD -j DOCKER-USER"

    func plan(_ table: String, _ chain: String, _ lines: [String], _ d: [DesiredRule]? = nil) -> [[String]] {
        RulePlanner.plan(table: table, chain: chain, listing: (["-P \(chain) ACCEPT"] + lines).joined(separator: "\n") + "\n",
                         desired: d ?? desired, ownComments: HypemanRules.allComments)
    }

    @Test func tokenizerHandlesQuotes() {
        #expect(IptablesRule.tokenize(#"-A FORWARD -i up0 -m comment --comment "some thing" -j DROP"#)
                == ["-A", "FORWARD", "-i", "up0", "-m", "comment", "--comment", "some thing", "-j", "DROP"])
        #expect(IptablesRule.tokenize(#"-A X --comment "a \"q\" b" -j ACCEPT"#) == ["-A", "X", "--comment", #"a "q" b"#, "-j", "ACCEPT"])
        #expect(IptablesRule.tokenize("  ") == [])
    }

    @Test func parsedListingMatchesDesiredDespiteOrder() throws {
        let nat = try #require(IptablesRule(listingLine: natLine))
        #expect(nat.comment == "hypeman-nat")
        #expect(nat.chain == "POSTROUTING")
        #expect(nat.spec.first == "-s")
        #expect(nat.matches(desired[0].rule))
        let out = try #require(IptablesRule(listingLine: outLine))
        #expect(out.matches(desired[1].rule), "conntrack state order must not matter")
        #expect(!out.matches(desired[2].rule))
        #expect(IptablesRule(listingLine: "-P FORWARD ACCEPT") == nil)
        // A different source, target, direction or negation is a different rule.
        for wrong in [natLine.replacingOccurrences(of: "10.100.0.0/16", with: "10.0.0.0/8"),
                      natLine.replacingOccurrences(of: "MASQUERADE", with: "ACCEPT"),
                      natLine.replacingOccurrences(of: "-o eth0", with: "-o eth1"),
                      natLine.replacingOccurrences(of: "-o eth0", with: "! -o eth0"),
                      natLine.replacingOccurrences(of: " -j", with: " -p tcp -j")] {
            #expect(try #require(IptablesRule(listingLine: wrong)).matches(desired[0].rule) == false, "\(wrong)")
        }
    }

    @Test func emptyChainsGetOurRules() {
        let natCmds = plan("nat", "POSTROUTING", [])
        #expect(natCmds == [["-t", "nat", "-A", "POSTROUTING"] + desired[0].spec])
        let fwdCmds = plan("filter", "FORWARD", [docker])
        #expect(fwdCmds == [["-t", "filter", "-I", "FORWARD", "1"] + desired[1].spec,
                            ["-t", "filter", "-I", "FORWARD", "2"] + desired[2].spec])
    }

    @Test func rightChainsNeedNothing() {
        #expect(plan("nat", "POSTROUTING", ["-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE", natLine]).isEmpty)
        #expect(plan("filter", "FORWARD", [outLine, inLine, docker]).isEmpty)
    }

    @Test func wrongRuleIsReplaced() {
        let stale = natLine.replacingOccurrences(of: "-o eth0", with: "-o eth9")
        let cmds = plan("nat", "POSTROUTING", [stale])
        #expect(cmds.count == 2)
        #expect(cmds[0] == ["-t", "nat", "-D", "POSTROUTING", "-s", "10.100.0.0/16", "-o", "eth9", "-m", "comment", "--comment", "hypeman-nat", "-j", "MASQUERADE"])
        #expect(cmds[1] == ["-t", "nat", "-A", "POSTROUTING"] + desired[0].spec)
    }

    @Test func duplicatesAreCollapsed() {
        let cmds = plan("nat", "POSTROUTING", [natLine, natLine])
        #expect(cmds.filter { $0[2] == "-D" }.count == 2)
        #expect(cmds.filter { $0[2] == "-A" }.count == 1)
    }

    @Test func misplacedForwardRulesMoveToTheTop() {
        // Someone inserted a rule ahead of ours: both of ours are re-inserted at 1 and 2.
        let cmds = plan("filter", "FORWARD", ["-A FORWARD -i eth0 -j DROP", outLine, inLine, docker])
        #expect(cmds.map { $0[2] } == ["-D", "-D", "-I", "-I"])
        #expect(cmds[2][4] == "1" && cmds[3][4] == "2")
        // Swapped order is wrong too.
        #expect(!plan("filter", "FORWARD", [inLine, outLine]).isEmpty)
        // Others' rules are never deleted.
        #expect(!cmds.contains { $0.contains("DROP") || $0.contains("DOCKER-USER") })
    }

    @Test func withoutUplinkOurRulesGoAway() {
        #expect(plan("filter", "FORWARD", [outLine, docker, inLine], []).map { $0[2] } == ["-D", "-D"])
        #expect(plan("filter", "FORWARD", [docker], []).isEmpty)
    }

    @Test func routeJSONAndOverlap() throws {
        let json = """
        [{"dst":"default","gateway":"192.0.2.2","dev":"eth0","flags":[]},
         {"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"192.0.2.1","flags":[]},
         {"dst":"10.100.0.0/16","dev":"vmbr0","protocol":"kernel","scope":"link","prefsrc":"10.100.0.1","flags":["linkdown"]},
         {"dst":"10.100.7.9","dev":"wg0","flags":[]},
         {"type":"blackhole","dst":"172.30.0.0/16","flags":[]}]
        """
        let routes = try IPRouteJSON.routes(json)
        #expect(routes.count == 5)
        let s = try IPv4Subnet(cidr: "10.100.0.0/16")
        let hit = try #require(IPRouteJSON.overlappingRoute(routes, subnet: s, bridge: "vmbr0"))
        #expect(hit.dst == "10.100.7.9" && hit.dev == "wg0")
        #expect(IPRouteJSON.overlappingRoute(routes, subnet: try IPv4Subnet(cidr: "10.200.0.0/16"), bridge: "vmbr0") == nil)
        #expect(IPRouteJSON.overlappingRoute(routes, subnet: try IPv4Subnet(cidr: "172.30.0.0/24"), bridge: "vmbr0")?.type == "blackhole")
        #expect(try IPRouteJSON.routes("") == [])
        #expect(throws: NetworkError.self) { _ = try IPRouteJSON.routes("Error: garbage") }
    }

    @Test func linkAndAddressJSON() throws {
        let links = try IPRouteJSON.links("""
        [{"ifindex":2,"ifname":"vmbr0","flags":["UP"],"linkinfo":{"info_kind":"bridge","info_data":{}}},
         {"ifindex":3,"ifname":"hype-abc","master":"vmbr0","linkinfo":{"info_kind":"tun","info_slave_kind":"bridge"}},
         {"ifindex":4,"ifname":"lo"}]
        """)
        #expect(links == [.init(name: "vmbr0", kind: "bridge", master: nil), .init(name: "hype-abc", kind: "tun", master: "vmbr0"),
                          .init(name: "lo", kind: nil, master: nil)])
        let addrs = try IPRouteJSON.addresses("""
        [{"ifindex":2,"ifname":"vmbr0","addr_info":[{"family":"inet","local":"10.100.0.1","prefixlen":16,"broadcast":"10.100.255.255"}]},{}]
        """)
        #expect(addrs == [.init(local: try #require(IPv4Address("10.100.0.1")), prefixLength: 16)])
    }
}
