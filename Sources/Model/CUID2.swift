/// CUID2-shaped identifiers: 24 characters, lowercase alphanumeric, starting with a letter.
/// Built from the clock, a per-process counter the system CSPRNG.
public enum CUID2 {
    private static let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)

    public static func make(length: Int = 24) -> String {
        var rng = SystemRandomNumberGenerator()  // getrandom(2) underneath
        var random = [UInt8](repeating: 0, count: length * 2)
        for i in random.indices { random[i] = UInt8.random(in: 0...255, using: &rng) }
        var out = [UInt8]()
        out.reserveCapacity(length)
        // First character: a letter (rejection sampling keeps it uniform).
        var i = 0
        while out.isEmpty {
            let b = random[i % random.count]; i += 1
            if b < 234 { out.append(alphabet[Int(b) % 26]) }
            if i > random.count { out.append(alphabet[0]) }
        }
        for b in random[i...] where out.count < length {
            if b < 252 { out.append(alphabet[Int(b) % 36]) }
        }
        while out.count < length { out.append(alphabet[Int(UInt32.random(in: 0..<36))]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// True if `s` has the shape of an id we generate (used for prefix resolution).
    public static func looksLikeID(_ s: String) -> Bool {
        guard let f = s.utf8.first, f >= 97, f <= 122 else { return false }
        return s.utf8.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) }
    }
}
