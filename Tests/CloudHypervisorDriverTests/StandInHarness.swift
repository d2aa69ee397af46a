import Foundation
import Testing
@testable import CloudHypervisorDriver
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// Locates the Python stand-in for `cloud-hypervisor` (tests/ch_standin) and a python3 that can run it.
enum StandIn {
    /// `<repo>` from this file's path (`<repo>/Tests/CloudHypervisorDriverTests/…`).
    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    static var wrapper: String { repoRoot + "/tests/ch_standin/cloud-hypervisor" }
    static var hungVMM: String { repoRoot + "/tests/ch_standin/hung-vmm" }

    /// The interpreter (absolute path) that has PyYAML and jsonschema, or why there is none.
    static let python: Result<String, Failure> = {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = ["python3", "-c", "import sys, yaml, jsonschema; print(sys.executable)"]
        let out = Pipe()
        probe.standardOutput = out
        probe.standardError = Pipe()
        do { try probe.run() } catch { return .failure(Failure("python3 cannot be started: \(error)")) }
        probe.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard probe.terminationStatus == 0, text.hasPrefix("/") else {
            return .failure(Failure("python3 with PyYAML and jsonschema not found (pip install pyyaml jsonschema)"))
        }
        return .success(text)
    }()

    struct Failure: Error { let reason: String; init(_ r: String) { reason = r } }

    /// True when the stand-in can run; prints the reason once when it cannot.
    static let available: Bool = {
        switch python {
        case .success: return true
        case .failure(let f):
            print("CloudHypervisorDriverTests: skipping stand-in tests: \(f.reason)")
            return false
        }
    }()

    static var pythonPath: String { (try? python.get()) ?? "python3" }
}

/// One request as the stand-in logged it (tests/ch_standin/standin.py, CH_STANDIN_LOG).
struct LoggedRequest: Decodable {
    var pid: Int?
    var connection: Int?
    var request_on_connection: Int?
    var method: String?
    var path: String?
    var headers: [[String]]?
    var content_length: Int?
    var transfer_encoding: String?
    var expect: Bool?
    var body: String?
    var status: Int?
    var response_body: String?
    var violations: [String]?

    var endpoint: String { (path ?? "").replacingOccurrences(of: "/api/v1/", with: "") }
    func header(_ name: String) -> String? {
        headers?.last(where: { $0.first?.lowercased() == name.lowercased() }).flatMap { $0.count > 1 ? $0[1] : nil }
    }
    var json: [String: Any]? {
        guard let body, let data = body.data(using: .utf8) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }
}

/// A temporary instance directory with boot files, disks and a driver pointed at the stand-in.
/// Kills every VMM it launched and removes the directory when released.
final class Sandbox {
    let dir: String
    var spec: VMSpec
    let requestLog: String
    private var launched: [Int32] = []

    init(hotplug: Int64 = 1 << 30, memory: Int64 = 512 << 20) throws {
        var template = Array("/tmp/chd.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw StandIn.Failure("mkdtemp failed") }
        dir = String(cString: made)
        requestLog = dir + "/requests.jsonl"
        for name in ["vmlinux", "initrd", "rootfs.img", "overlay.img", "config.img"] {
            _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: Data(count: 4096))
        }
        spec = VMSpec(instanceID: "inst1", vcpus: 2, memoryBytes: memory, hotplugBytes: hotplug,
                      kernelPath: dir + "/vmlinux", initramfsPath: dir + "/initrd",
                      cmdline: "console=ttyS0 panic=-1",
                      disks: [DiskSpec(id: "rootfs", path: dir + "/rootfs.img", readonly: true),
                              DiskSpec(id: "overlay", path: dir + "/overlay.img", readonly: false),
                              DiskSpec(id: "config", path: dir + "/config.img", readonly: true)],
                      net: nil, serialLogPath: dir + "/app.log", vmmLogPath: dir + "/vmm.log",
                      runDir: dir + "/run", vsockCID: 3)
    }

    deinit {
        for pid in launched where Glibc.kill(pid, 0) == 0 {
            _ = Glibc.kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    var apiSocket: String { spec.runDir + "/ch.sock" }
    var vsockSocket: String { spec.runDir + "/vsock.sock" }

    func driver(environment: [String: String] = [:], arguments: [String] = [], binary: String = StandIn.wrapper)
        -> CloudHypervisorDriver {
        var env = ["CH_STANDIN_PYTHON": StandIn.pythonPath, "CH_STANDIN_LOG": requestLog]
        for (k, v) in environment { env[k] = v }
        return CloudHypervisorDriver(configuration: .init(binary: binary, extraArguments: arguments, environment: env,
                                                          readyTimeout: 15, callTimeout: 10, longCallTimeout: 30,
                                                          vmmShutdownWait: 3, termWait: 2))
    }

    /// Launches and remembers the pid for cleanup.
    func launch(_ driver: CloudHypervisorDriver) throws(VMMError) -> CHRunningVM {
        let vm = try driver.launch(spec)
        launched.append(vm.pid)
        guard let ch = vm as? CHRunningVM else { throw .decoding("launch did not return a CHRunningVM") }
        return ch
    }

    func restore(_ driver: CloudHypervisorDriver, from snapshot: String) throws(VMMError) -> CHRunningVM {
        let vm = try driver.restore(spec, from: snapshot)
        launched.append(vm.pid)
        guard let ch = vm as? CHRunningVM else { throw .decoding("restore did not return a CHRunningVM") }
        return ch
    }

    func track(_ pid: Int32) { launched.append(pid) }

    func requests() -> [LoggedRequest] {
        guard let text = try? String(contentsOfFile: requestLog, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONDecoder().decode(LoggedRequest.self, from: Data($0.utf8)) }
    }

    func read(_ name: String) -> String { (try? String(contentsOfFile: dir + "/" + name, encoding: .utf8)) ?? "" }
    func exists(_ path: String) -> Bool { var st = stat(); return lstat(path, &st) == 0 }
}

/// Endpoints CH must receive without a body.
let bodilessEndpoints: Set<String> = ["vm.boot", "vm.pause", "vm.resume", "vm.power-button", "vm.shutdown",
                                      "vm.delete", "vm.reboot", "vmm.shutdown", "vmm.ping", "vm.info"]

/// Checks the wire discipline of every request the stand-in saw: no body (and no Content-Length
/// other than 0) on body-less calls, a Content-Length JSON body elsewhere, never chunked, no
/// `Expect`, one request per connection, and no OpenAPI violations.
func expectWireDiscipline(_ log: [LoggedRequest], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(!log.isEmpty, "the stand-in logged no requests", sourceLocation: sourceLocation)
    for r in log {
        let what = "\(r.method ?? "?") \(r.endpoint)"
        #expect(r.violations ?? [] == [], "\(what): \(r.violations ?? [])", sourceLocation: sourceLocation)
        #expect(r.transfer_encoding == nil, "\(what) used Transfer-Encoding", sourceLocation: sourceLocation)
        #expect(r.expect != true && r.header("Expect") == nil, "\(what) sent Expect", sourceLocation: sourceLocation)
        #expect(r.request_on_connection == 1, "\(what) reused a connection", sourceLocation: sourceLocation)
        if bodilessEndpoints.contains(r.endpoint) {
            #expect(r.body == nil, "\(what) carried a body", sourceLocation: sourceLocation)
            #expect(r.content_length == nil || r.content_length == 0, "\(what) Content-Length \(r.content_length ?? -1)",
                    sourceLocation: sourceLocation)
        } else {
            #expect(r.method == "PUT", "\(what)", sourceLocation: sourceLocation)
            #expect(r.content_length != nil && r.content_length == r.body?.utf8.count,
                    "\(what): Content-Length \(r.content_length ?? -1) for \(r.body?.utf8.count ?? -1) body bytes",
                    sourceLocation: sourceLocation)
            #expect(r.header("Content-Type") == "application/json", "\(what) Content-Type", sourceLocation: sourceLocation)
        }
    }
}

func processGone(_ pid: Int32) -> Bool { Glibc.kill(pid, 0) != 0 && errno == ESRCH }

/// The `.status` code and body of a thrown VMMError, or nil.
func statusOf(_ error: VMMError?) -> (Int, String)? {
    if case .status(let code, let body)? = error { return (code, body) }
    return nil
}

/// Runs `body` and returns the VMMError it throws (nil when it does not throw).
func vmmError(_ body: () throws(VMMError) -> Void) -> VMMError? {
    do { try body(); return nil } catch { return error }
}
