import CSQLite

/// A SQLite failure: the result code, the library's message and the statement involved.
public struct SQLiteError: Error, Sendable, CustomStringConvertible {
    public let code: Int32
    public let message: String
    public var isBusy: Bool { code & 0xff == SQLITE_BUSY || code & 0xff == SQLITE_LOCKED }
    public var isConstraint: Bool { code & 0xff == SQLITE_CONSTRAINT }
    public var description: String { "sqlite error \(code): \(message)" }
}

/// A value bound to, or read from, a statement.
public enum SQLValue: Sendable, Equatable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
}

public protocol SQLBindable { var sqlValue: SQLValue { get } }
extension Int: SQLBindable { public var sqlValue: SQLValue { .int(Int64(self)) } }
extension Int64: SQLBindable { public var sqlValue: SQLValue { .int(self) } }
extension Bool: SQLBindable { public var sqlValue: SQLValue { .int(self ? 1 : 0) } }
extension Double: SQLBindable { public var sqlValue: SQLValue { .double(self) } }
extension String: SQLBindable { public var sqlValue: SQLValue { .text(self) } }
extension Optional: SQLBindable where Wrapped: SQLBindable {
    public var sqlValue: SQLValue { self?.sqlValue ?? .null }
}
extension SQLValue: SQLBindable { public var sqlValue: SQLValue { self } }

/// Process-wide SQLite settings, applied once before the first connection opens. (If the
/// library was already initialised by someone else, SQLite refuses and its defaults stay.)
private let processSetup: Void = { _ = csqlite_configure_process() }()

/// One SQLite connection, confined to the thread that uses it (not Sendable). Opens in WAL mode
/// with a busy timeout, and caches prepared statements by SQL text.
public final class Connection {
    private var db: OpaquePointer?
    private var cache: [String: Statement] = [:]
    /// The same statements by the address of their SQL text's storage: the SQL is nearly always
    /// a `static let`, and hashing a long query on every call showed up in profiles. A hit is
    /// confirmed by comparing the text (the same storage compares in O(1)).
    private var cacheByAddress: [Int: (sql: String, statement: Statement)] = [:]
    public let path: String

    public init(path: String, busyTimeoutMs: Int32 = 10_000, readOnly: Bool = false) throws(SQLiteError) {
        processSetup
        self.path = path
        let flags = (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_NOMUTEX
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close_v2(handle)
            throw SQLiteError(code: rc, message: "open \(path): \(msg)")
        }
        db = handle
        sqlite3_busy_timeout(handle, busyTimeoutMs)
        sqlite3_extended_result_codes(handle, 1)
        if !readOnly {
            try execute("PRAGMA journal_mode=WAL")
        }
        try execute("PRAGMA synchronous=NORMAL")
        try execute("PRAGMA foreign_keys=ON")
        // Text is read as stored (see `Statement.textBytes`), which must be UTF-8 (SQLite's default).
        if let enc = try queryOne("PRAGMA encoding")?.values.first, enc != .text("UTF-8") {
            throw SQLiteError(code: SQLITE_MISMATCH, message: "open \(path): database encoding is \(enc), not UTF-8; hypeman only creates UTF-8 databases — restore it from a hypeman-created copy")
        }
    }

    deinit {
        cacheByAddress.removeAll()
        cache.removeAll()
        sqlite3_close_v2(db)
    }

    func error(_ rc: Int32, _ context: String) -> SQLiteError {
        SQLiteError(code: rc, message: "\(context): \(String(cString: sqlite3_errmsg(db)))")
    }

    /// Runs one or more statements that return no rows we need.
    public func execute(_ sql: String) throws(SQLiteError) {
        var errmsg: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &errmsg)
        if rc != SQLITE_OK {
            let msg = errmsg.map { String(cString: $0) } ?? "error"
            sqlite3_free(errmsg)
            throw SQLiteError(code: rc, message: msg)
        }
    }

    /// A cached prepared statement for `sql`, reset and with bindings cleared.
    public func prepare(_ sql: String) throws(SQLiteError) -> Statement {
        let address = sql.utf8.withContiguousStorageIfAvailable { Int(bitPattern: $0.baseAddress) }
        if let address, let hit = cacheByAddress[address], hit.sql == sql {
            hit.statement.reset()
            return hit.statement
        }
        let s: Statement
        if let cached = cache[sql] {
            cached.reset()
            s = cached
        } else {
            var stmt: OpaquePointer?
            let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
            guard rc == SQLITE_OK, let stmt else { throw error(rc, "prepare") }
            s = Statement(stmt, connection: self)
            cache[sql] = s
        }
        // The map holds the text, so its storage (and address) stays taken while it is mapped.
        // Texts built per call would only fill it: it is bounded, and starts over when full.
        if let address, address != 0 {
            if cacheByAddress.count >= 256 { cacheByAddress.removeAll(keepingCapacity: true) }
            cacheByAddress[address] = (sql, s)
        }
        return s
    }

    /// Runs `sql` with `args` and returns every row.
    @discardableResult
    public func query(_ sql: String, _ args: [any SQLBindable] = []) throws(SQLiteError) -> [Row] {
        let s = try prepare(sql)
        try s.bind(args)
        var rows: [Row] = []
        while try s.step() { rows.append(s.row()) }
        s.reset()
        return rows
    }

    /// Runs `sql` and returns the first row, if any.
    public func queryOne(_ sql: String, _ args: [any SQLBindable] = []) throws(SQLiteError) -> Row? {
        let s = try prepare(sql)
        try s.bind(args)
        let r = try s.step() ? s.row() : nil
        s.reset()
        return r
    }

    /// Runs a statement and returns the number of rows changed.
    @discardableResult
    public func run(_ sql: String, _ args: [any SQLBindable] = []) throws(SQLiteError) -> Int {
        let s = try prepare(sql)
        try s.bind(args)
        while try s.step() {}
        s.reset()
        return Int(sqlite3_changes(db))
    }

    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(db) }

    /// Runs `body` in a transaction (IMMEDIATE takes the write lock up front, so two writers
    /// cannot both read-then-write). Rolls back on any error.
    public func transaction<T>(immediate: Bool = true, _ body: () throws -> T) throws -> T {
        try execute(immediate ? "BEGIN IMMEDIATE" : "BEGIN")
        do {
            let r = try body()
            try execute("COMMIT")
            return r
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }
}

/// A prepared statement owned by its connection.
public final class Statement {
    private let stmt: OpaquePointer
    private unowned let connection: Connection

    init(_ stmt: OpaquePointer, connection: Connection) {
        self.stmt = stmt
        self.connection = connection
    }

    deinit { sqlite3_finalize(stmt) }

    /// Ends the current run and clears the bindings, so the statement can run again.
    public func reset() {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
    }

    /// Binds text to parameter `index` (1-based), without building an argument array.
    public func bind(_ text: String, at index: Int32) throws(SQLiteError) {
        var text = text
        let rc = text.withUTF8 { u in
            u.baseAddress.map { b in
                b.withMemoryRebound(to: CChar.self, capacity: u.count) { csqlite_bind_text(stmt, index, $0, Int32(u.count)) }
            } ?? csqlite_bind_text(stmt, index, "", 0)
        }
        if rc != SQLITE_OK { throw connection.error(rc, "bind") }
    }

    func bind(_ args: [any SQLBindable]) throws(SQLiteError) {
        for (i, a) in args.enumerated() {
            let idx = Int32(i + 1)
            let rc: Int32
            switch a.sqlValue {
            case .null: rc = sqlite3_bind_null(stmt, idx)
            case .int(let v): rc = sqlite3_bind_int64(stmt, idx, v)
            case .double(let v): rc = sqlite3_bind_double(stmt, idx, v)
            case .text(var v):
                rc = v.withUTF8 { u in
                    u.baseAddress.map { b in
                        b.withMemoryRebound(to: CChar.self, capacity: u.count) { csqlite_bind_text(stmt, idx, $0, Int32(u.count)) }
                    } ?? csqlite_bind_text(stmt, idx, "", 0)
                }
            }
            if rc != SQLITE_OK { throw connection.error(rc, "bind") }
        }
    }

    /// Steps once: true when a row is available (read it with the column accessors, or `row()`).
    public func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        let e = connection.error(rc, "step")
        sqlite3_reset(stmt)
        throw e
    }

    /// Column name → index, computed once per statement.
    private lazy var columns: ColumnIndex = {
        var map: [String: Int] = [:]
        for i in 0..<sqlite3_column_count(stmt) { map[String(cString: sqlite3_column_name(stmt, i))] = Int(i) }
        return ColumnIndex(map: map)
    }()

    // Column accessors by position (0-based) for the current row: no `Row`, no name lookups.
    // They answer like `Row`'s accessors for the same value.

    /// Text or blob as a string; nil for NULL, integers and reals (like `Row.string`).
    public func string(_ column: Int32) -> String? {
        switch sqlite3_column_type(stmt, column) {
        case SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_NULL: return nil
        default: return String(decoding: textBytes(column), as: UTF8.self)
        }
    }

    /// Runs `body` on the raw UTF-8 bytes of a text or blob value, valid only inside `body`;
    /// nil for NULL, integers and reals.
    public func withText<R>(_ column: Int32, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        switch sqlite3_column_type(stmt, column) {
        case SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_NULL: return nil
        default: return try body(textBytes(column))
        }
    }

    /// The bytes of a text or blob value as stored. `sqlite3_column_text` would first copy a
    /// value into a NUL-terminated buffer (a malloc per column); the blob accessor hands out the
    /// same UTF-8 bytes (the connection insists on a UTF-8 database) with their length instead.
    private func textBytes(_ column: Int32) -> UnsafeRawBufferPointer {
        let p = sqlite3_column_blob(stmt, column)
        return UnsafeRawBufferPointer(start: p, count: p == nil ? 0 : Int(sqlite3_column_bytes(stmt, column)))
    }

    /// An integer (a real is truncated); nil for NULL, text and blobs (like `Row.int`).
    public func int(_ column: Int32) -> Int64? {
        switch sqlite3_column_type(stmt, column) {
        case SQLITE_INTEGER: return sqlite3_column_int64(stmt, column)
        case SQLITE_FLOAT: return Int64(sqlite3_column_double(stmt, column))
        default: return nil
        }
    }

    /// A non-zero integer (like `Row.bool`).
    public func bool(_ column: Int32) -> Bool { (int(column) ?? 0) != 0 }

    /// The current row as a `Row`, readable by column name.
    public func row() -> Row {
        let n = sqlite3_column_count(stmt)
        var values: [SQLValue] = []
        values.reserveCapacity(Int(n))
        for i in 0..<n {
            switch sqlite3_column_type(stmt, i) {
            case SQLITE_INTEGER: values.append(.int(sqlite3_column_int64(stmt, i)))
            case SQLITE_FLOAT: values.append(.double(sqlite3_column_double(stmt, i)))
            case SQLITE_NULL: values.append(.null)
            default:
                values.append(.text(String(decoding: textBytes(i), as: UTF8.self)))
            }
        }
        return Row(columns: columns, values: values)
    }
}

/// Shared, immutable column lookup for the rows of one statement.
public final class ColumnIndex: Sendable {
    let map: [String: Int]
    init(map: [String: Int]) { self.map = map }
}

/// One result row, readable by column name.
public struct Row: Sendable {
    let columns: ColumnIndex
    public let values: [SQLValue]

    public subscript(_ name: String) -> SQLValue {
        guard let i = columns.map[name] else { return .null }
        return values[i]
    }

    public func string(_ name: String) -> String? { if case .text(let s) = self[name] { return s }; return nil }
    public func int(_ name: String) -> Int64? {
        switch self[name] {
        case .int(let i): return i
        case .double(let d): return Int64(d)
        default: return nil
        }
    }
    public func bool(_ name: String) -> Bool { (int(name) ?? 0) != 0 }
}
