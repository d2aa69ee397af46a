import Foundation
import Glibc
import Testing
import VMM
@testable import QEMUDriver

@Suite struct QMPJSONTests {
    @Test func keepsBooleansIntegersAndDoublesApart() throws {
        let v = try QMPJSON.parse(Array(#"{"a": true, "b": 1, "c": 1.5, "d": 1099511627776, "e": null, "f": [0, false], "g": "x"}"#.utf8))
        #expect(v["a"] == .bool(true))
        #expect(v["b"] == .int(1))
        #expect(v["c"] == .double(1.5))
        #expect(v["d"]?.int64Value == 1 << 40)
        #expect(v["e"] == .null)
        #expect(v["f"] == .array([.int(0), .bool(false)]))
        #expect(v["g"]?.stringValue == "x")
        #expect(v["missing"] == nil)
    }

    @Test func encodesCompactSortedJSON() {
        let v: QMPJSON = ["execute": "migrate", "arguments": ["uri": "fd:x", "n": 3, "ro": true]]
        #expect(v.jsonText == #"{"arguments":{"n":3,"ro":true,"uri":"fd:x"},"execute":"migrate"}"#)
    }
}

@Suite struct QMPClientTests {
    static func socketPath(_ name: String) -> String {
        let dir = NSTemporaryDirectory() + "hmqmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir + "/" + name
    }

    static func cleanup(_ socketPath: String) {
        try? FileManager.default.removeItem(atPath: (socketPath as NSString).deletingLastPathComponent)
    }

    /// Answers `qmp_capabilities` and anything else with an empty return.
    static func basic(_ r: FakeQMPServer.Request) -> FakeQMPServer.Answer {
        FakeQMPServer.Answer(lines: [FakeQMPServer.reply(r)])
    }

    @Test func negotiatesCapabilitiesBeforeAnyCommand() throws {
        let sockPath = Self.socketPath("a.sock")
        defer { Self.cleanup(sockPath) }
        let server = try FakeQMPServer(path: sockPath, handler: Self.basic)
        let c = try QMPClient.connect(path: server.path, timeout: .seconds(5))
        defer { c.close() }
        #expect(c.greeting["version"]?["qemu"]?["major"] == .int(7))
        #expect(server.commands == ["qmp_capabilities"])
        try c.execute("stop")
        #expect(server.commands == ["qmp_capabilities", "stop"])
    }

    @Test func matchesRepliesByIDAndBuffersInterleavedEvents() throws {
        let sockPath = Self.socketPath("b.sock")
        defer { Self.cleanup(sockPath) }
        let server = try FakeQMPServer(path: sockPath) { r in
            guard r.command == "query-status" else { return Self.basic(r) }
            return FakeQMPServer.Answer(lines: [
                FakeQMPServer.event("STOP"),
                #"{"return": {"status": "stale"}, "id": 999}"#,
                FakeQMPServer.event("MIGRATION", data: #"{"status": "completed"}"#),
                FakeQMPServer.reply(r, #"{"status": "paused", "running": false}"#),
            ])
        }
        let c = try QMPClient.connect(path: server.path, timeout: .seconds(5))
        defer { c.close() }
        let r = try c.execute("query-status")
        #expect(r["status"]?.stringValue == "paused")
        let events = c.takeEvents()
        #expect(events.map(\.name) == ["STOP", "MIGRATION"])
        #expect(events[1].data["status"]?.stringValue == "completed")
        #expect(events[0].timestamp == 1795930000.25)
        #expect(c.takeEvents().isEmpty)
    }

    @Test func errorRepliesBecomeStatusWithClassAndDescription() throws {
        let sockPath = Self.socketPath("c.sock")
        defer { Self.cleanup(sockPath) }
        let server = try FakeQMPServer(path: sockPath) { r in
            switch r.command {
            case "no-such":
                return FakeQMPServer.Answer(lines: [#"{"error": {"class": "CommandNotFound", "desc": "The command no-such has not been found"}, "id": \#(r.id?.jsonText ?? "null")}"#])
            case "device_del":
                return FakeQMPServer.Answer(lines: [#"{"error": {"class": "GenericError", "desc": "Device 'x' not found"}, "id": \#(r.id?.jsonText ?? "null")}"#])
            default:
                return Self.basic(r)
            }
        }
        let c = try QMPClient.connect(path: server.path, timeout: .seconds(5))
        defer { c.close() }
        #expect(throws: VMMError.status(404, "CommandNotFound: The command no-such has not been found")) { try c.execute("no-such") }
        #expect(throws: VMMError.status(500, "GenericError: Device 'x' not found")) { try c.execute("device_del", ["id": "x"]) }
        // The connection stays usable after an error reply.
        try c.execute("cont")
    }

    @Test func waitsForAMatchingEventAndKeepsOthers() throws {
        let sockPath = Self.socketPath("d.sock")
        defer { Self.cleanup(sockPath) }
        let server = try FakeQMPServer(path: sockPath) { r in
            guard r.command == "device_del" else { return Self.basic(r) }
            return FakeQMPServer.Answer(lines: [
                FakeQMPServer.reply(r),
                FakeQMPServer.event("DEVICE_DELETED", data: #"{"path": "/machine/peripheral/v/virtio-backend"}"#),
                FakeQMPServer.event("DEVICE_DELETED", data: #"{"device": "v", "path": "/machine/peripheral/v"}"#),
            ])
        }
        let c = try QMPClient.connect(path: server.path, timeout: .seconds(5))
        defer { c.close() }
        try c.execute("device_del", ["id": "v"])
        let ev = try c.waitForEvent(timeout: .seconds(5)) { $0.name == "DEVICE_DELETED" && $0.data["device"]?.stringValue == "v" }
        #expect(ev.data["path"]?.stringValue == "/machine/peripheral/v")
        #expect(c.takeEvents().map { $0.data["path"]?.stringValue } == ["/machine/peripheral/v/virtio-backend"])
        #expect(throws: VMMError.timeout("waiting for a QMP event on \(server.path)")) {
            try c.waitForEvent(timeout: .milliseconds(100)) { $0.name == "SHUTDOWN" }
        }
    }

    @Test func passesDescriptorsWithTheCommand() throws {
        let sockPath = Self.socketPath("e.sock")
        defer { Self.cleanup(sockPath) }
        let server = try FakeQMPServer(path: sockPath) { r in
            if r.command == "getfd", let fd = r.fd {
                let text = Array("written by the peer through \(r.arguments?["fdname"]?.stringValue ?? "?")".utf8)
                _ = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
                return Self.basic(r)
            }
            if r.command == "getfd" {
                return FakeQMPServer.Answer(lines: [#"{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}, "id": \#(r.id?.jsonText ?? "null")}"#])
            }
            return Self.basic(r)
        }
        let c = try QMPClient.connect(path: server.path, timeout: .seconds(5))
        defer { c.close() }
        let file = (server.path as NSString).deletingLastPathComponent + "/passed"
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        #expect(fd >= 0)
        try c.execute("getfd", ["fdname": "snap"], passing: fd)
        close(fd)
        #expect(String(decoding: FileManager.default.contents(atPath: file) ?? Data(), as: UTF8.self) == "written by the peer through snap")
        #expect(throws: VMMError.status(500, "GenericError: No file descriptor supplied via SCM_RIGHTS")) {
            try c.execute("getfd", ["fdname": "snap"])
        }
    }

    @Test func timesOutWithoutAReplyAndSkipsTheLateOne() throws {
        let sockPath = Self.socketPath("f.sock")
        defer { Self.cleanup(sockPath) }
        let server = try FakeQMPServer(path: sockPath) { r in
            if r.command == "slow" { return FakeQMPServer.Answer(lines: []) }
            if r.command == "query-version" {
                // The late reply to "slow" (id 2) arrives first and must be skipped.
                return FakeQMPServer.Answer(lines: [#"{"return": {"late": true}, "id": 2}"#, FakeQMPServer.reply(r, #"{"ok": 1}"#)])
            }
            return Self.basic(r)
        }
        let c = try QMPClient.connect(path: server.path, timeout: .seconds(5))
        defer { c.close() }
        #expect(throws: VMMError.timeout("QMP read")) { try c.execute("slow", timeout: .milliseconds(150)) }
        #expect(try c.execute("query-version")["ok"] == .int(1))
    }

    @Test func peerCloseIsATransportError() throws {
        let sockPath = Self.socketPath("g.sock")
        defer { Self.cleanup(sockPath) }
        let server = try FakeQMPServer(path: sockPath) { r in
            if r.command == "quit" {
                return FakeQMPServer.Answer(lines: [FakeQMPServer.reply(r), FakeQMPServer.event("SHUTDOWN", data: #"{"guest": false}"#)], close: true)
            }
            return Self.basic(r)
        }
        let c = try QMPClient.connect(path: server.path, timeout: .seconds(5))
        try c.execute("quit")
        #expect(try c.pollEvents(for: .seconds(5)).map(\.name) == ["SHUTDOWN"])
        #expect(!c.isConnected)
        #expect(throws: VMMError.transport("QMP connection to \(server.path) is closed")) { try c.execute("query-status") }
    }

    @Test func refusesAPeerThatIsNotQMP() throws {
        let path = Self.socketPath("h.sock")
        defer { Self.cleanup(path) }
        #expect(throws: VMMError.self) { try QMPClient.connect(path: path, timeout: .milliseconds(200)) }  // nobody listens
        let long = "/tmp/" + String(repeating: "x", count: 120)
        #expect(throws: VMMError.self) { try QMPClient.connect(path: long, timeout: .milliseconds(200)) }
    }
}
