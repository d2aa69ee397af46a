/// Errors from building guest boot files. Each message says what was wrong and, where there is
/// one, what to do about it.
public enum GuestBootError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The guest kernel directory is missing or incomplete; the message names the setup script.
    case kernelNotFound(String)
    /// A kernel module set could not be resolved (missing required module, bad modules.dep, cycle).
    case modules(String)
    /// An archive entry was invalid (bad path, duplicate entry).
    case archive(String)
    /// The guest configuration cannot be written safely (bad env key, bad path, bad address).
    case invalidConfig(String)
    /// A host tool (gzip, mkfs.ext4) is missing.
    case toolMissing(String)
    /// A host tool ran and failed.
    case commandFailed(command: String, status: Int32, output: String)
    /// Reading or writing a file failed.
    case io(String)

    public var description: String {
        switch self {
        case .kernelNotFound(let m): return "guest kernel not found: \(m)"
        case .modules(let m): return "kernel modules: \(m)"
        case .archive(let m): return "initramfs archive: \(m)"
        case .invalidConfig(let m): return "guest config: \(m)"
        case .toolMissing(let m): return "missing tool: \(m)"
        case .commandFailed(let c, let s, let o):
            let tail = o.count > 2000 ? String(o.suffix(2000)) : o
            return "\(c) failed with status \(s): \(tail.trimmingCharacters(in: .whitespacesAndNewlines))"
        case .io(let m): return "i/o: \(m)"
        }
    }
}
