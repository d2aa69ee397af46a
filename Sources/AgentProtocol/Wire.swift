/// Field encoding inside frame payloads: big-endian integers, `u32 length + bytes` strings,
/// `u32 count + items` lists. Readers fail on truncation instead of trapping.
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u32(_ v: UInt32) { appendBE32(&bytes, v) }
    public mutating func i32(_ v: Int32) { appendBE32(&bytes, UInt32(bitPattern: v)) }
    public mutating func data(_ v: [UInt8]) { u32(UInt32(v.count)); bytes += v }
    public mutating func string(_ v: String) { data(Array(v.utf8)) }
    public mutating func strings(_ v: [String]) { u32(UInt32(v.count)); for s in v { string(s) } }
}

public struct WireError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

public struct WireReader: Sendable {
    private let bytes: [UInt8]
    private var i = 0
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var isAtEnd: Bool { i == bytes.count }

    public mutating func u8() throws(WireError) -> UInt8 {
        guard i < bytes.count else { throw WireError("truncated agent message") }
        defer { i += 1 }
        return bytes[i]
    }
    public mutating func bool() throws(WireError) -> Bool { try u8() != 0 }
    public mutating func u32() throws(WireError) -> UInt32 {
        guard bytes.count - i >= 4 else { throw WireError("truncated agent message") }
        defer { i += 4 }
        return readBE32(bytes, i)
    }
    public mutating func i32() throws(WireError) -> Int32 { Int32(bitPattern: try u32()) }
    public mutating func data() throws(WireError) -> [UInt8] {
        let n = Int(try u32())
        guard bytes.count - i >= n else { throw WireError("truncated agent message") }
        defer { i += n }
        return Array(bytes[i..<(i + n)])
    }
    public mutating func string() throws(WireError) -> String {
        let d = try data()
        guard let s = String(validating: d, as: UTF8.self) else { throw WireError("agent message string is not UTF-8") }
        return s
    }
    public mutating func strings() throws(WireError) -> [String] {
        let n = Int(try u32())
        guard n <= Frame.maxPayload / 4 else { throw WireError("agent message list too long") }
        var out: [String] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try string()) }
        return out
    }
}
