/// The three NAT/forwarding rules (contract §2.7), recognised by their comments, and the pure
/// logic that turns an `iptables -S` listing into the commands that make it right.
enum HypemanRules {
    static let natComment = "hypeman-nat"
    static let fwdOutComment = "hypeman-fwd-out"
    static let fwdInComment = "hypeman-fwd-in"
    static let allComments: Set<String> = [natComment, fwdOutComment, fwdInComment]

    /// The rules for a bridge, subnet and uplink; FORWARD rules at positions 1 and 2 (ahead of
    /// Docker's), MASQUERADE appended.
    static func desired(bridge: String, subnet: IPv4Subnet, uplink: String) -> [DesiredRule] {
        [
            DesiredRule(table: "nat", chain: "POSTROUTING", position: nil, spec: [
                "-s", subnet.description, "-o", uplink,
                "-m", "comment", "--comment", natComment, "-j", "MASQUERADE",
            ]),
            DesiredRule(table: "filter", chain: "FORWARD", position: 1, spec: [
                "-i", bridge, "-o", uplink, "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED,RELATED",
                "-m", "comment", "--comment", fwdOutComment, "-j", "ACCEPT",
            ]),
            DesiredRule(table: "filter", chain: "FORWARD", position: 2, spec: [
                "-i", uplink, "-o", bridge, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
                "-m", "comment", "--comment", fwdInComment, "-j", "ACCEPT",
            ]),
        ]
    }

    /// Chains we manage, for listing.
    static let chains: [(table: String, chain: String)] = [("nat", "POSTROUTING"), ("filter", "FORWARD")]
}

struct DesiredRule: Sendable, Equatable {
    var table: String
    var chain: String
    /// Required 1-based position in the chain, or nil for "anywhere" (appended).
    var position: Int?
    var spec: [String]

    var rule: IptablesRule { IptablesRule(chain: chain, spec: spec) }
}

/// A rule reduced to what matters for comparison: its options (modules dropped, conntrack states
/// sorted) and its comment. `spec` keeps the tokens after `-A <chain>` for deletion by spec.
struct IptablesRule: Sendable, Equatable {
    var chain: String
    var options: [String: String]
    var comment: String?
    var spec: [String]

    init(chain: String, spec: [String]) {
        self.chain = chain
        self.spec = spec
        var opts: [String: String] = [:]
        var comment: String?
        var negate = false
        var i = 0
        while i < spec.count {
            let t = spec[i]
            if t == "!" { negate = true; i += 1; continue }
            guard t.hasPrefix("-") else { opts["arg\(i)"] = t; i += 1; continue }
            var value = ""
            if i + 1 < spec.count, !spec[i + 1].hasPrefix("-") || spec[i + 1] == "-" {
                value = spec[i + 1]
                i += 1
            }
            i += 1
            switch t {
            case "-m", "--match":
                break   // module loads are implied by the options that follow
            case "--comment":
                comment = value
            case "--ctstate", "--state":
                opts[(negate ? "!" : "") + "--ctstate"] = value.split(separator: ",").map(String.init).sorted().joined(separator: ",")
            default:
                opts[(negate ? "!" : "") + t] = value
            }
            negate = false
        }
        self.options = opts
        self.comment = comment
    }

    /// Parses one `-A <chain> …` line of `iptables -S`; nil for policies (`-P`, `-N`) and blanks.
    init?(listingLine line: String) {
        let tokens = Self.tokenize(line)
        guard tokens.count >= 2, tokens[0] == "-A" else { return nil }
        self.init(chain: tokens[1], spec: Array(tokens[2...]))
    }

    /// Same options and comment (order of options and conntrack states does not matter).
    func matches(_ other: IptablesRule) -> Bool {
        chain == other.chain && options == other.options && comment == other.comment
    }

    /// Splits like iptables-save quotes: whitespace separates, double quotes group, and a
    /// backslash escapes the next character inside quotes.
    static func tokenize(_ line: String) -> [String] {
        var out: [String] = []
        var cur = ""
        var inToken = false, quoted = false, escaped = false
        for ch in line {
            if escaped { cur.append(ch); escaped = false; continue }
            if quoted {
                if ch == "\\" { escaped = true } else if ch == "\"" { quoted = false } else { cur.append(ch) }
                continue
            }
            if ch == "\"" { quoted = true; inToken = true; continue }
            if ch == " " || ch == "\t" || ch == "\n" || ch == "\r" {
                if inToken { out.append(cur); cur = ""; inToken = false }
                continue
            }
            cur.append(ch)
            inToken = true
        }
        if inToken { out.append(cur) }
        return out
    }
}

enum RulePlanner {
    /// iptables argument lists (without `-w`) that turn `listing` (the output of
    /// `iptables -t <table> -S <chain>`) into one that holds exactly `desired` at their positions.
    /// Rules carrying one of `ownComments` but not wanted, duplicated, wrong or misplaced are
    /// deleted; others' rules are never touched. Returns [] when the chain is already right.
    static func plan(table: String, chain: String, listing: String, desired: [DesiredRule],
                     ownComments: Set<String>) -> [[String]] {
        let rules = listing.split(separator: "\n").compactMap { IptablesRule(listingLine: String($0)) }
            .filter { $0.chain == chain }
        let ours = rules.filter { $0.comment.map(ownComments.contains) ?? false }
        let wanted = desired.filter { $0.table == table && $0.chain == chain }

        var right = ours.count == wanted.count
        if right {
            for d in wanted {
                if let p = d.position {
                    if !(p >= 1 && p <= rules.count && rules[p - 1].matches(d.rule)) { right = false }
                } else if ours.filter({ $0.matches(d.rule) }).count != 1 {
                    right = false
                }
            }
        }
        if right { return [] }

        var cmds: [[String]] = []
        for r in ours { cmds.append(["-t", table, "-D", chain] + r.spec) }
        for d in wanted.filter({ $0.position != nil }).sorted(by: { ($0.position ?? 0) < ($1.position ?? 0) }) {
            cmds.append(["-t", table, "-I", chain, String(d.position ?? 1)] + d.spec)
        }
        for d in wanted where d.position == nil {
            cmds.append(["-t", table, "-A", chain] + d.spec)
        }
        return cmds
    }
}
