import Foundation

/// Disk-building failures, each with what to do about it.
public enum DiskError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A tool is not installed: install `package`.
    case toolMissing(tool: String, package: String)
    /// A tool ran and failed; `output` is what it printed, `hint` what to try.
    case toolFailed(tool: String, status: Int32, output: String, hint: String)
    /// File-system trouble around the disk file (create, truncate, rename, walk).
    case io(String)
    /// Bad arguments (size, paths).
    case invalid(String)

    public var description: String {
        switch self {
        case .toolMissing(let tool, let package):
            return "\(tool) not found in PATH, /usr/sbin or /sbin: install the Debian package \(package)"
        case .toolFailed(let tool, let status, let output, let hint):
            let text = output.trimmingCharacters(in: .whitespacesAndNewlines)
            return "\(tool) failed (exit \(status)): \(text.isEmpty ? "no output" : String(text.suffix(2000)))\(hint.isEmpty ? "" : " — \(hint)")"
        case .io(let m): return m
        case .invalid(let m): return m
        }
    }
}
