/// Overflow-checked arithmetic for byte counts that come from registries and archives. Sizes from
/// outside are bounded before use, and every sum goes through here: nil means "overflowed",
/// never a trap.
public enum ByteMath {
    /// `a + b`, or nil when it does not fit in an `Int64`.
    public static func add(_ a: Int64, _ b: Int64) -> Int64? {
        let (r, overflow) = a.addingReportingOverflow(b)
        return overflow ? nil : r
    }

    /// `a * b`, or nil when it does not fit in an `Int64`.
    public static func multiply(_ a: Int64, _ b: Int64) -> Int64? {
        let (r, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? nil : r
    }

    /// The sum of `values`, or nil when any partial sum overflows.
    public static func sum<S: Sequence>(_ values: S) -> Int64? where S.Element == Int64 {
        var total: Int64 = 0
        for v in values {
            guard let t = add(total, v) else { return nil }
            total = t
        }
        return total
    }
}
