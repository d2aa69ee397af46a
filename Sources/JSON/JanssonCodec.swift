import CJansson

/// A parse failure with jansson's reason and position.
public struct JSONParseError: Error, Sendable, CustomStringConvertible {
    public let reason: String
    public let line: Int
    public let column: Int
    public var description: String { "invalid JSON at line \(line), column \(column): \(reason)" }
}

/// Parsing and serialising through jansson. `json_t` never leaves this file.
public enum JSON {
    /// Maximum nesting accepted when converting (jansson itself limits depth to 2048).
    static let maxDepth = 64

    /// Parses any JSON value from UTF-8 bytes. Duplicate object keys are rejected.
    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        var err = json_error_t()
        let flags = cjansson_load_flags()
        let root: UnsafeMutablePointer<json_t>? = bytes.withUnsafeBufferPointer { buf in
            buf.baseAddress.flatMap { base in
                base.withMemoryRebound(to: CChar.self, capacity: buf.count) { json_loadb($0, buf.count, flags, &err) }
            } ?? json_loadb("", 0, flags, &err)
        }
        guard let root else {
            let text = withUnsafePointer(to: &err) { String(cString: cjansson_error_text($0)) }
            throw JSONParseError(reason: text, line: Int(err.line), column: Int(err.column))
        }
        defer { cjansson_decref(root) }
        guard let v = convert(root, depth: 0) else {
            throw JSONParseError(reason: "document nested deeper than \(maxDepth) levels", line: 0, column: 0)
        }
        return v
    }

    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue { try parse(Array(text.utf8)) }

    private static func convert(_ j: UnsafeMutablePointer<json_t>, depth: Int) -> JSONValue? {
        if depth > maxDepth { return nil }
        switch json_type(rawValue: UInt32(cjansson_typeof(j))) {
        case JSON_OBJECT:
            var o = JSONObject()
            var it = json_object_iter(j)
            while let i = it {
                guard let k = json_object_iter_key(i), let v = json_object_iter_value(i) else { break }
                let key = String(decoding: UnsafeRawBufferPointer(start: k, count: json_object_iter_key_len(i)), as: UTF8.self)
                guard let cv = convert(v, depth: depth + 1) else { return nil }
                o[key] = cv
                it = json_object_iter_next(j, i)
            }
            return .object(o)
        case JSON_ARRAY:
            var a: [JSONValue] = []
            let n = json_array_size(j)
            a.reserveCapacity(n)
            for i in 0..<n {
                guard let e = json_array_get(j, i), let ce = convert(e, depth: depth + 1) else { return nil }
                a.append(ce)
            }
            return .array(a)
        case JSON_STRING:
            let n = json_string_length(j)
            guard let p = json_string_value(j) else { return .string("") }
            return .string(String(decoding: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self))
        case JSON_INTEGER: return .int(json_integer_value(j))
        case JSON_REAL: return .double(json_real_value(j))
        case JSON_TRUE: return .bool(true)
        case JSON_FALSE: return .bool(false)
        default: return .null
        }
    }

    private static func build(_ v: JSONValue) -> UnsafeMutablePointer<json_t>? {
        switch v {
        case .null: return cjansson_null()
        case .bool(let b): return cjansson_bool(b ? 1 : 0)
        case .int(let i): return json_integer(i)
        case .double(let d): return d.isFinite ? json_real(d) : cjansson_null()
        case .string(let s):
            var s = s
            return s.withUTF8 { u in
                u.baseAddress.map { b in b.withMemoryRebound(to: CChar.self, capacity: u.count) { json_stringn_nocheck($0, u.count) } }
                    ?? json_string_nocheck("")
            }
        case .array(let a):
            let arr = json_array()
            for e in a { if let je = build(e) { json_array_append_new(arr, je) } }
            return arr
        case .object(let o):
            let obj = json_object()
            for i in 0..<o.keys.count {
                guard let jv = build(o.values[i]) else { continue }
                var key = o.keys[i]
                key.withUTF8 { u in
                    if let b = u.baseAddress {
                        b.withMemoryRebound(to: CChar.self, capacity: u.count) { _ = json_object_setn_new_nocheck(obj, $0, u.count, jv) }
                    } else {
                        _ = json_object_set_new_nocheck(obj, "", jv)
                    }
                }
            }
            return obj
        }
    }

    /// Serialises compactly as UTF-8 bytes, objects in key order. Written by `JSONWriter`, whose
    /// output is byte-identical to jansson's dump (`serializeWithJansson`, kept as the reference).
    public static func serialize(_ v: JSONValue) -> [UInt8] {
        var w = JSONWriter()
        w.value(v)
        return w.bytes
    }

    /// jansson's compact dump of `v`: the reference `JSONWriter` must match byte for byte.
    /// Usually one pass into a buffer of a guessed size; a second, exact one only when it was too small.
    static func serializeWithJansson(_ v: JSONValue) -> [UInt8] {
        guard let j = build(v) else { return Array("null".utf8) }
        defer { cjansson_decref(j) }
        return dump(j, capacity: 4096)
    }

    /// A real as jansson prints it (precision 17); `null` when it is not finite.
    static func realText(_ d: Double) -> [UInt8] {
        guard d.isFinite, let j = json_real(d) else { return Array("null".utf8) }
        defer { cjansson_decref(j) }
        return dump(j, capacity: 32)
    }

    private static func dump(_ j: UnsafeMutablePointer<json_t>, capacity initial: Int) -> [UInt8] {
        let flags = cjansson_dump_flags()
        var capacity = initial
        while true {
            var needed = 0
            let out = [UInt8](unsafeUninitializedCapacity: capacity) { buf, count in
                needed = buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: capacity) { json_dumpb(j, $0, capacity, flags) }
                count = needed <= capacity ? needed : 0
            }
            if needed == 0 { return Array("null".utf8) }
            if needed <= capacity { return out }
            capacity = needed
        }
    }

    public static func serializeString(_ v: JSONValue) -> String { String(decoding: serialize(v), as: UTF8.self) }
}

