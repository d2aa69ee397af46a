import AgentProtocol
import JSON

/// The client's first message (hypeman contract §1.7), mapped to the agent's `ExecStart`:
///
///     {"command": [str], "tty": bool, "env": {str: str}, "cwd": str, "timeout": int >= 0,
///      "wait_for_agent": number >= 0, "rows": int > 0, "cols": int > 0}
///
/// Every field is optional (null = absent); unknown keys are ignored. An empty or missing
/// command runs `/bin/sh`.
struct ExecRequest: Sendable, Equatable {
    var start: ExecStart
    /// Seconds to wait for the guest agent to come up.
    var waitForAgent: Double

    static let defaultWaitForAgent = 5.0
    static let maxWaitForAgent = 300.0
    /// Terminal sizes travel as 16-bit values to the kernel.
    static let maxTerminalSize: Int64 = 65535

    /// What is wrong with a first message; sent to the client as `{"error": message}`.
    struct Invalid: Error, Sendable, Equatable {
        var message: String
        init(_ message: String) { self.message = message }
    }

    static func parse(_ bytes: [UInt8]) throws(Invalid) -> ExecRequest {
        let value: JSONValue
        do {
            value = try JSON.parse(bytes)
        } catch {
            throw Invalid("the first message must be a JSON exec request: \(error.description)")
        }
        guard let o = value.objectValue else {
            throw Invalid("the first message must be a JSON object (got \(value.typeName))")
        }
        func field(_ key: String) -> JSONValue? {
            guard let v = o[key], !v.isNull else { return nil }
            return v
        }

        var start = ExecStart(command: ["/bin/sh"])
        if let v = field("command") {
            guard let items = v.arrayValue else { throw Invalid("command must be an array of strings (got \(v.typeName))") }
            var argv: [String] = []
            for (i, item) in items.enumerated() {
                guard let s = item.stringValue else { throw Invalid("command[\(i)] must be a string (got \(item.typeName))") }
                guard !s.utf8.contains(0) else { throw Invalid("command[\(i)] must not contain NUL") }
                argv.append(s)
            }
            if !argv.isEmpty { start.command = argv }
        }
        if let v = field("tty") {
            guard let b = v.boolValue else { throw Invalid("tty must be a boolean (got \(v.typeName))") }
            start.tty = b
        }
        if let v = field("env") {
            guard let env = v.objectValue else { throw Invalid("env must be an object of strings (got \(v.typeName))") }
            var pairs: [(String, String)] = []
            for (key, item) in env {
                guard !key.isEmpty else { throw Invalid("env keys must not be empty") }
                guard !key.contains("="), !key.utf8.contains(0) else {
                    throw Invalid("env key \"\(key.prefix(64))\" must not contain '=' or NUL")
                }
                guard let s = item.stringValue else {
                    throw Invalid("env value of \(key.prefix(64)) must be a string (got \(item.typeName))")
                }
                guard !s.utf8.contains(0) else { throw Invalid("env value of \(key.prefix(64)) must not contain NUL") }
                pairs.append((key, s))
            }
            start.env = pairs.sorted { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) }.map { "\($0.0)=\($0.1)" }
        }
        if let v = field("cwd") {
            guard let s = v.stringValue else { throw Invalid("cwd must be a string (got \(v.typeName))") }
            guard !s.utf8.contains(0) else { throw Invalid("cwd must not contain NUL") }
            start.cwd = s
        }
        if let v = field("timeout") {
            guard case .some(let n) = wholeNumber(v), n >= 0, n <= Int64(UInt32.max) else {
                throw Invalid("timeout must be a whole number of seconds >= 0 (0 = no limit)")
            }
            start.timeoutSeconds = UInt32(n)
        }
        var wait = defaultWaitForAgent
        if let v = field("wait_for_agent") {
            let seconds: Double
            switch v {
            case .int(let i): seconds = Double(i)
            case .double(let d): seconds = d
            default: throw Invalid("wait_for_agent must be a number of seconds >= 0 (got \(v.typeName))")
            }
            guard seconds.isFinite, seconds >= 0 else { throw Invalid("wait_for_agent must be a number of seconds >= 0") }
            wait = min(seconds, maxWaitForAgent)
        }
        if let v = field("rows") { start.rows = try terminalSize("rows", v) }
        if let v = field("cols") { start.cols = try terminalSize("cols", v) }
        return ExecRequest(start: start, waitForAgent: wait)
    }

    /// A later text message `{"resize": {"rows": R, "cols": C}}` (exactly that shape, both > 0);
    /// nil for any other text, which the gateway forwards to stdin.
    static func resize(_ bytes: [UInt8]) -> (rows: UInt32, cols: UInt32)? {
        guard let first = bytes.first(where: { $0 != 32 && $0 != 9 && $0 != 10 && $0 != 13 }), first == UInt8(ascii: "{"),
              bytes.count < 4096,
              let o = (try? JSON.parse(bytes))?.objectValue, o.count == 1,
              let r = o["resize"]?.objectValue, r.count == 2,
              let rowsValue = r["rows"], let colsValue = r["cols"],
              let rows = try? terminalSize("rows", rowsValue), let cols = try? terminalSize("cols", colsValue)
        else { return nil }
        return (rows, cols)
    }

    private static func terminalSize(_ name: String, _ v: JSONValue) throws(Invalid) -> UInt32 {
        guard case .some(let n) = wholeNumber(v), n > 0, n <= maxTerminalSize else {
            throw Invalid("\(name) must be a whole number from 1 to \(maxTerminalSize)")
        }
        return UInt32(n)
    }

    /// Integers, and floats with no fractional part (`24.0`); not booleans or strings.
    private static func wholeNumber(_ v: JSONValue) -> Int64? {
        switch v {
        case .int, .double: return v.intValue
        default: return nil
        }
    }
}
