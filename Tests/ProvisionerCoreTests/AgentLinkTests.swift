import Foundation
import Testing
@testable import ProvisionerCore
import AgentProtocol
import CloudHypervisorDriver
import VMM

/// The host end of the guest-agent link against the real `hypeman-agent` run on the host
/// (`--listen-unix`, root `/`): readiness, exec sessions, link loss and reconnection, and Cloud
/// Hypervisor's hybrid vsock through the CH stand-in (tests/ch_standin) relaying to the agent.
@Suite(.serialized) struct AgentLinkTests {
    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The agent built beside this test bundle (`swift build` builds every product).
    static var agentBinary: String? {
        if let env = ProcessInfo.processInfo.environment["HYPEMAN_AGENT_BIN"] { return env }
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("hypeman-agent").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir.deleteLastPathComponent()
        }
        return nil
    }

    /// A python3 with PyYAML and jsonschema for the CH stand-in (nil: the vsock test skips).
    static let standInPython: String? = {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = ["python3", "-c", "import sys, yaml, jsonschema; print(sys.executable)"]
        let out = Pipe()
        probe.standardOutput = out
        probe.standardError = FileHandle(forWritingAtPath: "/dev/null")
        guard (try? probe.run()) != nil else { return nil }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        probe.waitUntilExit()
        return probe.terminationStatus == 0 && text.hasPrefix("/") ? text : nil
    }()

    final class Sandbox {
        let dir: String
        var agent: Process?
        init() throws {
            var template = Array("/tmp/hm-agentlink.XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw CancellationError() }
            dir = String(cString: made)
        }
        deinit {
            stopAgent()
            try? FileManager.default.removeItem(atPath: dir)
        }
        func startAgent(socket: String) throws {
            guard let bin = AgentLinkTests.agentBinary else {
                Issue.record("hypeman-agent not built: run `swift build --product hypeman-agent` first")
                throw CancellationError()
            }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bin)
            p.arguments = ["--listen-unix", socket, "--root", "/"]
            p.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try p.run()
            agent = p
        }
        func stopAgent() {
            if let a = agent, a.isRunning { kill(a.processIdentifier, SIGKILL); a.waitUntilExit() }
            agent = nil
        }
    }

    /// Collects a session's events.
    final class Collector: @unchecked Sendable {
        let cond = NSCondition()
        var output: [UInt8] = []
        var exit: AgentProtocol.ExitStatus?
        func handle(_ ev: AgentSessionEvent) {
            cond.lock(); defer { cond.broadcast(); cond.unlock() }
            switch ev {
            case .output(_, let b): output += b
            case .exit(let s): exit = s
            }
        }
        func waitExit(_ seconds: Double) -> AgentProtocol.ExitStatus? {
            let deadline = Date().addingTimeInterval(seconds)
            cond.lock(); defer { cond.unlock() }
            while exit == nil { if !cond.wait(until: deadline) { break } }
            return exit
        }
        func waitOutput(_ seconds: Double) -> [UInt8] {
            let deadline = Date().addingTimeInterval(seconds)
            cond.lock(); defer { cond.unlock() }
            while output.isEmpty { if !cond.wait(until: deadline) { break } }
            return output
        }
    }

    final class ReadyCount: @unchecked Sendable {
        let lock = NSLock()
        var ids: [String] = []
        func add(_ id: String) { lock.lock(); ids.append(id); lock.unlock() }
        var count: Int { lock.lock(); defer { lock.unlock() }; return ids.count }
    }

    @Test func readinessExecAndReconnectAfterTheAgentRestarts() throws {
        let box = try Sandbox()
        let socket = box.dir + "/agent.sock"
        let readies = ReadyCount()
        let hub = AgentHub { readies.add($0) }
        defer { hub.closeAll() }
        // The link is opened before the agent exists (as when a VM is still booting).
        hub.connect("i1", channel: .unixSocket(socket))
        #expect(!hub.isReady("i1"))
        try box.startAgent(socket: socket)
        #expect(hub.waitReady("i1", timeout: 10))
        #expect(readies.ids == ["i1"])

        let link = try #require(hub.link("i1"))
        let c = Collector()
        _ = try link.openSession(ExecStart(command: ["sh", "-c", "echo hi; echo err >&2; exit 7"], env: ["A=b"])) { c.handle($0) }
        #expect(c.waitExit(10) == AgentProtocol.ExitStatus(code: 7))
        #expect(String(decoding: c.output, as: UTF8.self).split(separator: "\n").sorted() == ["err", "hi"])

        // The agent dies mid-session: the session ends with 255 and the link reconnects when it is back.
        let long = Collector()
        _ = try link.openSession(ExecStart(command: ["sh", "-c", "echo started; exec sleep 100"])) { long.handle($0) }
        #expect(long.waitOutput(10) == Array("started\n".utf8))
        box.stopAgent()
        let lost = long.waitExit(10)
        #expect(lost?.code == 255 && lost?.error.contains("connection lost") == true)
        #expect(!hub.isReady("i1"))
        #expect(throws: (any Error).self) { _ = try link.openSession(ExecStart(command: ["true"])) { _ in } }
        try? FileManager.default.removeItem(atPath: socket)
        try box.startAgent(socket: socket)
        #expect(hub.waitReady("i1", timeout: 10))
        #expect(readies.count == 2)
        let again = Collector()
        _ = try link.openSession(ExecStart(command: ["echo", "back"])) { again.handle($0) }
        #expect(again.waitExit(10)?.code == 0 && again.output == Array("back\n".utf8))

        // Closing the link ends it for good.
        hub.disconnect("i1")
        #expect(hub.link("i1") == nil && !hub.isReady("i1"))
    }

    @Test func hybridVsockThroughTheCloudHypervisorStandIn() throws {
        guard let python = Self.standInPython else {
            print("AgentLinkTests: skipping the hybrid vsock test: no python3 with PyYAML and jsonschema for the CH stand-in")
            return
        }
        let box = try Sandbox()
        let guestDir = box.dir + "/guest-vsock"
        try FileManager.default.createDirectory(atPath: guestDir, withIntermediateDirectories: true)
        for name in ["vmlinux", "initrd", "rootfs.img", "overlay.img", "config.img"] {
            _ = FileManager.default.createFile(atPath: box.dir + "/" + name, contents: Data(count: 4096))
        }
        let spec = VMSpec(instanceID: "inst1", vcpus: 1, memoryBytes: 256 << 20, hotplugBytes: 0,
                          kernelPath: box.dir + "/vmlinux", initramfsPath: box.dir + "/initrd", cmdline: "console=ttyS0",
                          disks: [DiskSpec(id: "rootfs", path: box.dir + "/rootfs.img", readonly: true)],
                          net: nil, serialLogPath: box.dir + "/app.log", vmmLogPath: box.dir + "/vmm.log",
                          runDir: box.dir + "/run", vsockCID: 3)
        let driver = CloudHypervisorDriver(configuration: .init(
            binary: Self.repoRoot + "/tests/ch_standin/cloud-hypervisor", environment: ["CH_STANDIN_GUEST_VSOCK": guestDir, "CH_STANDIN_PYTHON": python],
            readyTimeout: 15, callTimeout: 10, longCallTimeout: 30, vmmShutdownWait: 3, termWait: 2))
        let vm: any RunningVM
        do { vm = try driver.launch(spec) } catch {
            // The stand-in needs python3 with PyYAML and jsonschema (the CH driver tests say so too).
            print("AgentLinkTests: skipping the hybrid vsock test: the CH stand-in did not start: \(error)")
            return
        }
        defer { vm.kill() }
        let channel = try #require(driver.agentChannel(spec))
        #expect(channel == .hybridVsock(socket: box.dir + "/run/vsock.sock", port: AgentChannel.vsockPort))

        // No guest listener yet: CONNECT is refused (CH closes), and the link keeps retrying.
        #expect(throws: (any Error).self) { _ = try AgentSocket.connect(channel) }
        let hub = AgentHub { _ in }
        defer { hub.closeAll() }
        hub.connect("inst1", channel: channel)
        try box.startAgent(socket: guestDir + "/\(AgentChannel.vsockPort).sock")
        #expect(hub.waitReady("inst1", timeout: 10))
        let c = Collector()
        let session = try #require(hub.link("inst1"))
        let stream = try session.openSession(ExecStart(command: ["sh", "-c", "cat; echo done"])) { c.handle($0) }
        // stdin through the relay, then EOF.
        try session.send(Frame(.stdin, stream: stream, payload: Array("through vsock\n".utf8)))
        try session.send(Frame(.stdinClose, stream: stream))
        #expect(c.waitExit(10)?.code == 0)
        #expect(String(decoding: c.output, as: UTF8.self) == "through vsock\ndone\n")
    }
}
