import SQLite
import JSON
import Model

/// The shared truth: one SQLite file (WAL) opened by every FastCGI thread and the Provisioner.
/// A `Store` wraps one connection and is confined to one thread. All SQL text lives in this target.
public final class Store {
    public let db: Connection

    /// Opens the database and applies pending migrations (safe to call from many processes at once).
    public init(path: String) throws {
        db = try Connection(path: path)
        try Migrations.apply(db)
    }

    /// Runs `body` inside an IMMEDIATE transaction.
    public func transaction<T>(_ body: () throws -> T) throws -> T { try db.transaction(body) }
}

/// The result of resolving a user-supplied key (id, name or id prefix).
public enum Resolution<T> {
    case found(T)
    case notFound
    case ambiguous

    /// The value, or the contract's 404/409. (Consuming: the value moves out, uncopied.)
    public consuming func get() throws(APIError) -> T {
        switch self {
        case .found(let v): return v
        case .notFound: throw APIError(.notFound, "resource not found")
        case .ambiguous: throw APIError(.ambiguous, "multiple resources match, use full ID")
        }
    }
}

/// JSON text columns.
enum Columns {
    static func encode(_ v: JSONValue) -> String { JSON.serializeString(v) }
    static func decode(_ s: String?) -> JSONValue? {
        guard let s, !s.isEmpty else { return nil }
        return try? JSON.parse(s)
    }
    static func stringArray(_ s: String?) -> [String]? {
        guard let a = decode(s)?.arrayValue else { return nil }
        return a.compactMap(\.stringValue)
    }
    static func stringMap(_ s: String?) -> [String: String] {
        s.flatMap { JSON.parseStringMap($0) } ?? [:]
    }
    static func encode(_ a: [String]?) -> String? { a.map { encode(.strings($0)) } }
    static func encode(_ m: [String: String]) -> String { encode(.stringMap(m)) }
}
