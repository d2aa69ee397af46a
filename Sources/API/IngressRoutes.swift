import FastCGI
import JSON
import Model
import Store

/// `/ingresses` and `/ingresses/{id}`: stored and validated (contract §1.6); routing comes later.
enum IngressRoutes {
    static func register(_ r: inout Router) {
        r.add("GET", "/ingresses") { h, _, ex, _ in
            h.send(ex, status: 200, .array(try h.store.listIngresses().map(Render.ingress)))
        }
        r.add("POST", "/ingresses") { h, req, ex, _ in try create(h, req, ex) }
        r.add("GET", "/ingresses/{id}") { h, _, ex, p in
            h.send(ex, status: 200, Render.ingress(try h.store.resolveIngress(p["id"] ?? "").get()))
        }
        r.add("DELETE", "/ingresses/{id}") { h, _, ex, p in
            let ing = try h.store.resolveIngress(p["id"] ?? "").get()
            try h.store.deleteIngress(id: ing.id)
            h.sendNoContent(ex)
        }
    }

    static func bad(_ m: String) -> APIError { APIError(.badRequestDomain, m) }

    /// Captures of a pattern hostname (`{instance}.example.com` → ["instance"]), [] for a literal.
    static func captures(_ host: String) throws -> [String] {
        let labels = host.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        var caps: [String] = []
        let anyBrace = host.contains("{") || host.contains("}")
        if !anyBrace {
            if host.hasPrefix("*") { throw bad("hostname \(host): a literal hostname cannot start with '*'") }
            guard labels.allSatisfy({ validLabel($0) }) else { throw bad("hostname \(host) is not a valid DNS name") }
            return []
        }
        guard labels.count >= 2 else { throw bad("pattern hostname \(host) needs at least 2 labels") }
        for l in labels {
            if l.hasPrefix("{") && l.hasSuffix("}") && l.count > 2 {
                let name = String(l.dropFirst().dropLast())
                guard name.utf8.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 }) else {
                    throw bad("hostname \(host): capture {\(name)} must be lowercase letters, digits or _")
                }
                if caps.contains(name) { throw bad("hostname \(host): duplicate capture {\(name)}") }
                caps.append(name)
            } else if l.contains("{") || l.contains("}") {
                throw bad("hostname \(host): captures must be whole labels (like {instance}.example.com)")
            } else if !validLabel(l) {
                throw bad("hostname \(host) is not a valid DNS name")
            }
        }
        return caps
    }

    static func validLabel(_ l: String) -> Bool {
        let b = Array(l.lowercased().utf8)
        guard !b.isEmpty, b.count <= 63 else { return false }
        func an(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        return an(b.first!) && an(b.last!) && b.allSatisfy { an($0) || $0 == 45 }
    }

    static func create(_ h: APIHandler, _ req: Request, _ ex: any Exchange) throws {
        let body = try RequestBody.read(req, ex)
        try body.allowOnly(["name", "rules"])
        let name = try body.requireString("name")
        guard Names.isValidResourceName(name) else {
            throw body.fail("name", "string doesn't match the regular expression \"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$\" (at most 63 characters)")
        }
        if try h.store.ingressExists(named: name) {
            throw APIError(.alreadyExists, "ingress with name '\(name)' already exists")
        }
        guard let rules = try body.array("rules") else { throw body.fail("rules", "property \"rules\" is missing") }
        guard !rules.isEmpty else { throw body.fail("rules", "minimum number of items is 1") }
        var outRules: [JSONValue] = []
        var hosts: [(hostname: String, port: Int)] = []
        for rule in rules {
            try rule.allowOnly(["match", "target", "tls", "redirect_http"])
            guard let match = try rule.nested("match") else { throw rule.fail("match", "property \"match\" is missing") }
            guard let target = try rule.nested("target") else { throw rule.fail("target", "property \"target\" is missing") }
            try match.allowOnly(["hostname", "port"])
            try target.allowOnly(["instance", "port"])
            let hostname = try match.requireString("hostname").lowercased()
            guard !hostname.isEmpty else { throw bad("every rule needs a hostname") }
            let port = try match.int("port") ?? 80
            guard (1...65535).contains(port) else { throw bad("match.port \(port) must be between 1 and 65535") }
            var instance = try target.requireString("instance")
            guard let tport = try target.int("port") else { throw target.fail("port", "property \"port\" is missing") }
            guard (1...65535).contains(tport) else { throw bad("target.port \(tport) must be between 1 and 65535") }
            let tls = try rule.bool("tls") ?? false
            let redirect = try rule.bool("redirect_http") ?? false
            if redirect && !tls { throw bad("redirect_http requires tls") }
            if tls && !h.config.acmeConfigured {
                throw bad("tls needs ACME to be configured on the server (ACME_EMAIL and ACME_DNS_PROVIDER)")
            }
            let caps = try captures(hostname)
            if caps.isEmpty {
                switch try h.store.resolveInstance(instance) {
                case .found(let inst): instance = inst.name
                // A rule naming an instance that does not exist refers to a missing resource: 404.
                case .notFound: throw APIError(.instanceNotFound, "target instance \(instance) not found", status: 404)
                case .ambiguous: throw APIError(.ambiguous, "target instance \(instance) matches several instances; use its ID")
                }
            } else {
                guard instance.hasPrefix("{") && instance.hasSuffix("}"), caps.contains(String(instance.dropFirst().dropLast())) else {
                    throw bad("target.instance \(instance) must reference a capture of the hostname (\(caps.map { "{\($0)}" }.joined(separator: ", ")))")
                }
            }
            if hosts.contains(where: { $0.hostname == hostname && $0.port == Int(port) }) {
                throw APIError(.hostnameInUse, "hostname \(hostname) on port \(port) appears twice")
            }
            hosts.append((hostname, Int(port)))
            outRules.append(["match": ["hostname": .string(hostname), "port": .int(port)],
                             "target": ["instance": .string(instance), "port": .int(tport)],
                             "tls": .bool(tls), "redirect_http": .bool(redirect)])
        }
        let rec = IngressRecord(id: CUID2.make(), name: name, rules: .array(outRules), createdAt: Timestamp.now())
        try h.store.insertIngress(rec, hosts: hosts)
        h.send(ex, status: 201, Render.ingress(rec))
    }
}
