import SQLite
import JSON
import Model

/// An ingress row; `rules` is the normalized rules array as the API shows it.
public struct IngressRecord: Sendable {
    public var id: String
    public var name: String
    public var rules: JSONValue
    public var createdAt: String
    public init(id: String, name: String, rules: JSONValue, createdAt: String) {
        self.id = id; self.name = name; self.rules = rules; self.createdAt = createdAt
    }
}

extension Store {
    func ingressRecord(_ r: Row) -> IngressRecord {
        IngressRecord(id: r.string("id") ?? "", name: r.string("name") ?? "",
                      rules: Columns.decode(r.string("rules")) ?? .array([]), createdAt: r.string("created_at") ?? "")
    }

    public func listIngresses() throws -> [IngressRecord] {
        try db.query("SELECT * FROM ingresses ORDER BY id").map(ingressRecord)
    }

    public func ingressExists(named name: String) throws -> Bool {
        try db.queryOne("SELECT 1 FROM ingresses WHERE name = ?", [name]) != nil
    }

    /// Exact id, then exact name, then unique id prefix.
    public func resolveIngress(_ key: String) throws -> Resolution<IngressRecord> {
        if let r = try db.queryOne("SELECT * FROM ingresses WHERE id = ?", [key]) { return .found(ingressRecord(r)) }
        if let r = try db.queryOne("SELECT * FROM ingresses WHERE name = ?", [key]) { return .found(ingressRecord(r)) }
        guard !key.isEmpty, CUID2.looksLikeID(key) else { return .notFound }
        let rows = try db.query("SELECT * FROM ingresses WHERE id >= ? AND id < ? LIMIT 2", [key, key + "\u{10FFFF}"])
        if rows.count == 1 { return .found(ingressRecord(rows[0])) }
        return rows.isEmpty ? .notFound : .ambiguous
    }

    /// Inserts atomically: unique name (409 `already_exists`) and unique hostname+port across all
    /// rules (409 `hostname_in_use`).
    public func insertIngress(_ rec: IngressRecord, hosts: [(hostname: String, port: Int)]) throws {
        try transaction {
            if try db.queryOne("SELECT 1 FROM ingresses WHERE name = ?", [rec.name]) != nil {
                throw APIError(.alreadyExists, "ingress with name '\(rec.name)' already exists")
            }
            for h in hosts {
                if try db.queryOne("SELECT 1 FROM ingress_hosts WHERE hostname = ? AND port = ?", [h.hostname, h.port]) != nil {
                    throw APIError(.hostnameInUse, "hostname \(h.hostname) on port \(h.port) is already used by another ingress")
                }
            }
            try db.run("INSERT INTO ingresses(id, name, rules, created_at) VALUES(?, ?, ?, ?)",
                       [rec.id, rec.name, Columns.encode(rec.rules), rec.createdAt])
            for h in hosts {
                try db.run("INSERT INTO ingress_hosts(hostname, port, ingress_id) VALUES(?, ?, ?)", [h.hostname, h.port, rec.id])
            }
        }
    }

    public func deleteIngress(id: String) throws {
        try transaction {
            try db.run("DELETE FROM ingress_hosts WHERE ingress_id = ?", [id])
            try db.run("DELETE FROM ingresses WHERE id = ?", [id])
        }
    }
}
