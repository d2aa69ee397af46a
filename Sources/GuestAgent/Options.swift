import Glibc

/// The agent's command line (see `usage`).
struct AgentOptions {
    var virtioPorts: [String] = []
    var vsockPorts: [UInt32] = []
    var unixPaths: [String] = []
    /// The app root sessions chroot into; "/" means no chroot.
    var root = "/"
    var envFile: String?
    var workdirFile: String?
    var sysBlock = "/sys/block"
    var dev = "/dev"
    var stateDir = "/run/hypeman/live"

    static let usage = """
        usage: hypeman-agent [--virtio-port NAME] [--vsock-port N] [--listen-unix PATH] [--root DIR]
                             [--env-file PATH] [--workdir-file PATH] [--sys-block DIR] [--dev DIR] [--state-dir DIR]
        """

    struct UsageError: Error { var message: String }

    /// Parses `arguments` (without the program name). Each link option may be repeated.
    static func parse(_ arguments: [String]) throws(UsageError) -> AgentOptions {
        var options = AgentOptions()
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { throw UsageError(message: "\(flag) needs a value") }
            switch flag {
            case "--virtio-port": options.virtioPorts.append(value)
            case "--vsock-port":
                guard let port = UInt32(value) else { throw UsageError(message: "--vsock-port needs a port number, got \(value)") }
                options.vsockPorts.append(port)
            case "--listen-unix": options.unixPaths.append(value)
            case "--root": options.root = normalizedDirectory(value)
            case "--env-file": options.envFile = value
            case "--workdir-file": options.workdirFile = value
            case "--sys-block": options.sysBlock = normalizedDirectory(value)
            case "--dev": options.dev = normalizedDirectory(value)
            case "--state-dir": options.stateDir = normalizedDirectory(value)
            default: throw UsageError(message: "unknown option \(flag)")
            }
        }
        if options.virtioPorts.isEmpty && options.vsockPorts.isEmpty && options.unixPaths.isEmpty {
            throw UsageError(message: "no link: pass --virtio-port, --vsock-port or --listen-unix")
        }
        guard options.root.hasPrefix("/") else { throw UsageError(message: "--root must be an absolute path") }
        return options
    }

    /// `dir/` and `dir//` become `dir`; `/` stays `/`.
    private static func normalizedDirectory(_ path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }
}
