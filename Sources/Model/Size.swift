/// Size strings as the contract parses and prints them (contract §2.5): binary units, integers only.
public enum Size {
    public static let KiB: Int64 = 1024
    public static let MiB: Int64 = 1024 * 1024
    public static let GiB: Int64 = 1024 * 1024 * 1024
    public static let TiB: Int64 = GiB * 1024

    /// Parses `"1GB"`, `"1 gb"`, `"512MB"`, `"2G"`, `"1024"`. Rejects decimals, bits (`Mb`),
    /// `GiB`, leading whitespace, negative numbers and overflow. Returns nil when invalid.
    public static func parse(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        var i = 0
        var value: Int64 = 0
        guard !bytes.isEmpty, bytes[0] >= 48, bytes[0] <= 57 else { return nil }
        while i < bytes.count, bytes[i] >= 48, bytes[i] <= 57 {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int64(bytes[i] - 48))
            if o1 || o2 { return nil }
            value = a
            i += 1
        }
        while i < bytes.count, bytes[i] == 32 || bytes[i] == 9 { i += 1 }
        let unitRaw = String(decoding: bytes[i...], as: UTF8.self)
        // Capital prefix + lowercase "b" means bits: rejected.
        let unitBytes = Array(unitRaw.utf8)
        if unitBytes.count == 2, unitBytes[1] == UInt8(ascii: "b"), unitBytes[0] >= 65, unitBytes[0] <= 90,
           unitBytes[0] != UInt8(ascii: "B") {
            return nil
        }
        let unit = unitRaw.lowercased()
        let multiplier: Int64
        switch unit {
        case "", "b", "byte", "bytes": multiplier = 1
        case "k", "kb", "kilo", "kilobyte", "kilobytes": multiplier = KiB
        case "m", "mb", "mega", "megabyte", "megabytes": multiplier = MiB
        case "g", "gb", "giga", "gigabyte", "gigabytes": multiplier = GiB
        case "t", "tb", "tera", "terabyte", "terabytes": multiplier = TiB
        case "p", "pb", "peta", "petabyte", "petabytes": multiplier = TiB * 1024
        case "e", "eb", "exa", "exabyte", "exabytes": multiplier = TiB * 1024 * 1024
        default: return nil
        }
        let (r, o) = value.multipliedReportingOverflow(by: multiplier)
        return o ? nil : r
    }

    /// `a + b` when it fits in an `Int64`, nil when it would overflow (or either is negative):
    /// every place that combines sizes from a request or a record goes through this, so no
    /// input can trap the process.
    public static func sum(_ a: Int64, _ b: Int64) -> Int64? {
        guard a >= 0, b >= 0 else { return nil }
        let (r, o) = a.addingReportingOverflow(b)
        return o ? nil : r
    }

    /// `a + b + ...` checked as in `sum(_:_:)`.
    public static func sum(_ values: [Int64]) -> Int64? {
        var total: Int64 = 0
        for v in values {
            guard let t = sum(total, v) else { return nil }
            total = t
        }
        return total
    }

    /// `"%.1f <unit>"` with the largest unit the value is strictly greater than:
    /// 1 GiB → "1024.0 MB", 3 GiB → "3.0 GB", 1.5 GiB → "1.5 GB".
    public static func format(_ bytes: Int64) -> String {
        for (size, name) in units where bytes > size {
            return oneDecimal(Double(bytes) / Double(size)) + name
        }
        return String(bytes) + " B"
    }

    /// Units from the largest, each with the separating space.
    private static let units: [(Int64, String)] = [
        (TiB * 1024 * 1024, " EB"), (TiB * 1024, " PB"), (TiB, " TB"), (GiB, " GB"), (MiB, " MB"), (KiB, " KB"),
    ]

    /// Formats with one decimal, rounding half to even like Go's %.1f on binary doubles.
    static func oneDecimal(_ v: Double) -> String {
        let scaled = (v * 10).rounded(.toNearestOrEven)
        let whole = Int64(scaled) / 10
        let frac = Int64(scaled) % 10
        return String(whole) + "." + String(abs(frac))
    }
}
