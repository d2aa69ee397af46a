import Foundation

/// Output of one command.
struct CommandResult: Sendable, Equatable {
    var status: Int32
    var stdout: String
    var stderr: String

    /// stderr, or stdout when stderr is empty (some tools report errors on stdout).
    var message: String { stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? stdout : stderr }
}

/// The OS edge: finds and runs programs. Real runs go through `ProcessRunner`; tests can record.
protocol CommandRunner: Sendable {
    /// Absolute path of `tool`, or `.toolMissing`.
    func locate(_ tool: String) throws(NetworkError) -> String
    func run(_ executable: String, _ arguments: [String]) throws(NetworkError) -> CommandResult
}

/// Runs programs with Foundation's Process: C locale, no stdin, stdout and stderr captured apart.
struct ProcessRunner: CommandRunner {
    static let packages = ["ip": "iproute2", "bridge": "iproute2", "iptables": "iptables", "sysctl": "procps"]
    static let searchDirs = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]

    func locate(_ tool: String) throws(NetworkError) -> String {
        var dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        dirs += Self.searchDirs
        for d in dirs where !d.isEmpty {
            let p = d + "/" + tool
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw .toolMissing(tool: tool, package: Self.packages[tool] ?? tool)
    }

    func run(_ executable: String, _ arguments: [String]) throws(NetworkError) -> CommandResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["LC_ALL"] = "C"
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch {
            throw .commandFailed(command: ([executable] + arguments).joined(separator: " "), status: -1,
                                 output: "cannot start: \(error.localizedDescription)", hint: "")
        }
        // Drain stderr on another thread so neither pipe can fill up and stall the child.
        let errBox = DataBox()
        let errHandle = err.fileHandleForReading
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { errBox.set(errHandle.readDataToEndOfFile()) }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        return CommandResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                             stderr: String(decoding: errBox.get(), as: UTF8.self))
    }
}

/// A lock-protected Data for the stderr reader thread.
private final class DataBox: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ d: Data) { lock.lock(); data = d; lock.unlock() }
    func get() -> Data { lock.lock(); defer { lock.unlock() }; return data }
}

/// Runs tools inside the configured namespace (`ip netns exec <ns> <tool> …`) or in ours.
struct NamespaceShell: Sendable {
    let netns: String
    let runner: any CommandRunner

    /// Runs `tool args`; returns the result whatever the exit status.
    func run(_ tool: String, _ args: [String]) throws(NetworkError) -> CommandResult {
        let path = try runner.locate(tool)
        if netns.isEmpty { return try runner.run(path, args) }
        let ip = try runner.locate("ip")
        return try runner.run(ip, ["netns", "exec", netns, path] + args)
    }

    /// Runs `tool args` and throws `.commandFailed` unless it exits 0.
    @discardableResult
    func check(_ tool: String, _ args: [String], hint: String = "") throws(NetworkError) -> CommandResult {
        let r = try run(tool, args)
        guard r.status == 0 else {
            throw .commandFailed(command: display(tool, args), status: r.status, output: r.message,
                                 hint: hint.isEmpty ? Self.hint(for: r.message) : hint)
        }
        return r
    }

    func display(_ tool: String, _ args: [String]) -> String {
        let prefix = netns.isEmpty ? [] : ["ip", "netns", "exec", netns]
        return (prefix + [tool] + args).joined(separator: " ")
    }

    static func hint(for message: String) -> String {
        if message.contains("Operation not permitted") || message.contains("Permission denied") {
            return "this needs CAP_NET_ADMIN: run the provisioner as root"
        }
        if message.contains("Cannot open network namespace") {
            return "the network namespace is gone: recreate it with ip netns add"
        }
        return ""
    }
}
