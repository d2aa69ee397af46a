/// Compact JSON text written straight into a byte buffer, for responses on the hot path (no
/// `JSONValue` tree, no jansson objects). The output is byte-identical to jansson's compact dump
/// with our flags: the same string escaping (`\"`, `\\`, `\b \f \n \r \t`, other control
/// characters as `\u00XX` with upper-case hex, everything else verbatim), integers in decimal,
/// reals through jansson itself (precision 17). `JSON.serialize` is built on it.
///
/// Commas are inserted automatically: call `key` before each member of an object, and nothing
/// between array elements.
public struct JSONWriter {
    /// The text written so far (UTF-8).
    public private(set) var bytes: [UInt8]
    /// A value or a closed container was just written, so the next member/element needs a comma.
    private var afterValue = false

    public init(capacity: Int = 512) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    // MARK: containers

    public mutating func beginObject() { separate(); bytes.append(UInt8(ascii: "{")); afterValue = false }
    public mutating func endObject() { bytes.append(UInt8(ascii: "}")); afterValue = true }
    public mutating func beginArray() { separate(); bytes.append(UInt8(ascii: "[")); afterValue = false }
    public mutating func endArray() { bytes.append(UInt8(ascii: "]")); afterValue = true }

    /// An object member's name written by code: it must need no escaping (no `"`, `\` or
    /// control characters), which is what makes it cheaper than `key(_: String)`.
    public mutating func key(_ name: StaticString) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        afterValue = false
    }

    /// An object member's name from data (escaped). (Its own label: with two unlabelled
    /// overloads a literal would pick `String`, the default literal type, and pay for escaping.)
    public mutating func key(escaping name: String) {
        separate()
        appendQuoted(name)
        bytes.append(UInt8(ascii: ":"))
        afterValue = false
    }

    // MARK: scalars

    public mutating func string(_ s: String) {
        separate()
        appendQuoted(s)
        afterValue = true
    }

    /// A string given as UTF-8 bytes, which must be valid UTF-8 (jansson would refuse the
    /// document otherwise; callers pass text that came from Swift strings or was validated).
    public mutating func string(utf8 s: UnsafeRawBufferPointer) {
        separate()
        appendQuoted(utf8: s)
        afterValue = true
    }

    /// A string, or `null` for nil.
    public mutating func string(_ s: String?) {
        if let s { string(s) } else { null() }
    }

    public mutating func int(_ v: Int64) {
        separate()
        appendDecimal(v)
        afterValue = true
    }

    public mutating func int(_ v: Int64?) {
        if let v { int(v) } else { null() }
    }

    public mutating func bool(_ b: Bool) {
        separate()
        if b { appendASCII("true") } else { appendASCII("false") }
        afterValue = true
    }

    public mutating func null() {
        separate()
        appendASCII("null")
        afterValue = true
    }

    /// A real, formatted by jansson (`%.17g`, `.0` added to integral values, exponent tidied);
    /// non-finite values are written as `null`, as jansson cannot represent them.
    public mutating func double(_ d: Double) {
        separate()
        bytes.append(contentsOf: JSON.realText(d))
        afterValue = true
    }

    /// Any `JSONValue`, objects in their key order.
    public mutating func value(_ v: JSONValue) {
        switch v {
        case .null: null()
        case .bool(let b): bool(b)
        case .int(let i): int(i)
        case .double(let d): double(d)
        case .string(let s): string(s)
        case .array(let a):
            beginArray()
            for e in a { value(e) }
            endArray()
        case .object(let o):
            beginObject()
            for i in 0..<o.keys.count {
                key(escaping: o.keys[i])
                value(o.values[i])
            }
            endObject()
        }
    }

    // MARK: text

    private mutating func separate() {
        if afterValue { bytes.append(UInt8(ascii: ",")) }
    }

    private mutating func appendASCII(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    private mutating func appendQuoted(_ s: String) {
        var s = s
        s.withUTF8 { appendQuoted(utf8: UnsafeRawBufferPointer($0)) }
    }

    /// `"…"` with jansson's escaping: runs of plain bytes are copied in one go.
    private mutating func appendQuoted(utf8 s: UnsafeRawBufferPointer) {
        bytes.append(UInt8(ascii: "\""))
        var runStart = 0
        var i = 0
        let n = s.count
        while i < n {
            let c = s[i]
            if c >= 0x20 && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\") {
                i += 1
                continue
            }
            if i > runStart { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: s[runStart..<i])) }
            appendEscape(c)
            i += 1
            runStart = i
        }
        if n > runStart { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: s[runStart..<n])) }
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func appendEscape(_ c: UInt8) {
        bytes.append(UInt8(ascii: "\\"))
        switch c {
        case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\""))
        case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\"))
        case 0x08: bytes.append(UInt8(ascii: "b"))
        case 0x0C: bytes.append(UInt8(ascii: "f"))
        case 0x0A: bytes.append(UInt8(ascii: "n"))
        case 0x0D: bytes.append(UInt8(ascii: "r"))
        case 0x09: bytes.append(UInt8(ascii: "t"))
        default:
            let hex: StaticString = "0123456789ABCDEF"
            bytes.append(UInt8(ascii: "u"))
            bytes.append(UInt8(ascii: "0"))
            bytes.append(UInt8(ascii: "0"))
            hex.withUTF8Buffer { h in
                bytes.append(h[Int(c >> 4)])
                bytes.append(h[Int(c & 0xF)])
            }
        }
    }

    private mutating func appendDecimal(_ v: Int64) {
        if v >= 0 && v < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(v))
            return
        }
        // 20 digits and a sign cover Int64.min.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buf in
            var m = v.magnitude
            var p = 20
            repeat {
                p -= 1
                buf[p] = UInt8(ascii: "0") + UInt8(m % 10)
                m /= 10
            } while m > 0
            if v < 0 { bytes.append(UInt8(ascii: "-")) }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buf[p..<20]))
        }
    }
}
