import Foundation
@testable import Network

struct ShellResult {
    var status: Int32
    var out: String
    var err: String
}

/// Runs `argv` directly (no shell), capturing stdout and stderr.
@discardableResult
func run(_ argv: [String]) -> ShellResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: argv[0])
    p.arguments = Array(argv.dropFirst())
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    do { try p.run() } catch { return ShellResult(status: -1, out: "", err: "\(error)") }
    let errHandle = err.fileHandleForReading
    let box = Box()
    let group = DispatchGroup()
    DispatchQueue.global().async(group: group) { box.data = errHandle.readDataToEndOfFile() }
    let o = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return ShellResult(status: p.terminationStatus, out: String(decoding: o, as: UTF8.self), err: String(decoding: box.data, as: UTF8.self))
}

private final class Box: @unchecked Sendable {
    private let lock = NSLock()
    private var _data = Data()
    var data: Data {
        get { lock.lock(); defer { lock.unlock() }; return _data }
        set { lock.lock(); _data = newValue; lock.unlock() }
    }
}

let ipTool = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "ip"
let python = ["/usr/bin/python3", "/usr/local/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) }

enum NetEnv {
    /// Why integration tests cannot run here, or nil when they can (root, `ip netns` works).
    static let unavailableReason: String? = {
        if geteuid() != 0 { return "not running as root" }
        if !FileManager.default.isExecutableFile(atPath: ipTool) { return "iproute2 (ip) is not installed" }
        let probe = "hm-probe-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        let r = run([ipTool, "netns", "add", probe])
        if r.status != 0 { return "`ip netns add` fails: \(r.err.trimmingCharacters(in: .whitespacesAndNewlines))" }
        run([ipTool, "netns", "del", probe])
        return nil
    }()

    static var usable: Bool {
        if let why = unavailableReason {
            print("NetworkTests: skipping integration tests: \(why)")
            return false
        }
        return true
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
}

/// Namespaces (and background processes) a test made; `destroy()` removes them all.
final class TestNet: @unchecked Sendable {
    let tag = String(format: "%06x", UInt32.random(in: 0..<0x100_0000))
    private(set) var namespaces: [String] = []
    private var processes: [Process] = []

    /// Creates `<prefix>-<tag>` with loopback up.
    func namespace(_ prefix: String) throws -> String {
        let name = "\(prefix)-\(tag)"
        let r = run([ipTool, "netns", "add", name])
        guard r.status == 0 else { throw TestFailure(description: "ip netns add \(name): \(r.err)") }
        namespaces.append(name)
        try must(name, "ip", "link", "set", "lo", "up")
        return name
    }

    /// Runs a command inside `ns`.
    @discardableResult
    func exec(_ ns: String, _ argv: String...) -> ShellResult { exec(ns, argv) }
    func exec(_ ns: String, _ argv: [String]) -> ShellResult { run([ipTool, "netns", "exec", ns] + argv) }

    /// Same, throwing when it fails.
    @discardableResult
    func must(_ ns: String, _ argv: String...) throws -> ShellResult {
        let r = exec(ns, argv)
        guard r.status == 0 else { throw TestFailure(description: "in \(ns): \(argv.joined(separator: " ")) -> \(r.status): \(r.err)\(r.out)") }
        return r
    }

    /// Starts a long-running program in `ns`; it is killed by `destroy()`.
    func background(_ ns: String, _ argv: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ipTool)
        p.arguments = ["netns", "exec", ns] + argv
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        processes.append(p)
    }

    func destroy() {
        // SIGKILL: children of the test runner inherit a signal mask that blocks SIGTERM.
        for p in processes where p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        processes = []
        for ns in namespaces.reversed() {
            let r = run([ipTool, "netns", "del", ns])
            if r.status != 0 { print("NetworkTests: could not delete namespace \(ns): \(r.err)") }
        }
        namespaces = []
    }
}
