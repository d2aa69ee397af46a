@testable import ExecGateway
import Foundation
import Glibc

/// A running `ExecServer` on a fresh socket with a `FakeExecBackend`; captures log lines.
final class GatewayHarness: Sendable {
    let path: String
    let backend = FakeExecBackend()
    let server: ExecServer
    private let logBox = LogBox()

    private static let counter = Counter()

    init(maxSessions: Int = 64, limits: ExecServer.Limits = ExecServer.Limits()) throws {
        path = "/tmp/hm-exec-\(getpid())-\(Self.counter.next()).sock"
        let box = logBox
        server = ExecServer(socketPath: path, backend: backend, maxSessions: maxSessions, limits: limits,
                            log: { box.append($0) })
        try server.start()
    }

    var logs: [String] { logBox.lines }

    func stop() { server.stop() }

    func client() throws -> WebSocketTestClient { try WebSocketTestClient(path: path) }

    /// Polls `condition` every 10 ms until it holds or `seconds` pass.
    static func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }
}

final class LogBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _lines: [String] = []
    func append(_ l: String) { lock.withLock { _lines.append(l) } }
    var lines: [String] { lock.withLock { _lines } }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func next() -> Int { lock.withLock { n += 1; return n } }
}
