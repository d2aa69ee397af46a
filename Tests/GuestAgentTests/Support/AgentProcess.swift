import Glibc

/// A `hypeman-agent` started for one test, listening on `<dir>/a.sock`, logging to `<dir>/agent.log`.
final class AgentProcess {
    let directory: TempDirectory
    let socketPath: String
    let logPath: String
    private(set) var pid: pid_t = 0

    /// The binary: $HYPEMAN_AGENT_BIN, else `hypeman-agent` next to the test bundle.
    static func binaryPath() throws -> String {
        if let fromEnv = getenv("HYPEMAN_AGENT_BIN") {
            let path = String(cString: fromEnv)
            guard access(path, X_OK) == 0 else { throw AgentTestError("HYPEMAN_AGENT_BIN=\(path) is not an executable file") }
            return path
        }
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlink("/proc/self/exe", &buffer, 4096)
        guard n > 0 else { throw AgentTestError("cannot read /proc/self/exe; set HYPEMAN_AGENT_BIN to the hypeman-agent binary") }
        let exe = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var candidates: [String] = []
        var dir = String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)])
        // Bundle layouts differ (flat or inside *.xctest/...); look up a few levels.
        for _ in 0..<4 where !dir.isEmpty {
            candidates.append("\(dir)/hypeman-agent")
            dir = String(dir[..<(dir.lastIndex(of: "/") ?? dir.startIndex)])
        }
        if let found = candidates.first(where: { access($0, X_OK) == 0 }) { return found }
        throw AgentTestError("hypeman-agent not found next to the test bundle (\(candidates.first ?? exe)); "
            + "run `swift build --product hypeman-agent` (with the same --scratch-path) first, or set HYPEMAN_AGENT_BIN")
    }

    /// Starts the agent with `--listen-unix <dir>/a.sock --root <root>` plus `arguments`, and
    /// waits (up to 5 s) until it accepts connections. `launcher` is a command prefix that ends
    /// by exec'ing its arguments (e.g. unshare), so `pid` is still the agent's.
    init(label: String, root: String = "/", arguments: [String] = [], directory: TempDirectory? = nil,
         launcher: [String] = []) throws {
        self.directory = try directory ?? TempDirectory(label)
        socketPath = "\(self.directory.path)/a.sock"
        logPath = "\(self.directory.path)/agent.log"
        let binary = try AgentProcess.binaryPath()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let command = launcher + [binary, "--listen-unix", socketPath, "--root", root] + arguments
        let argv = command.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let rc = posix_spawn(&pid, command[0], &actions, nil, argv, environ)
        guard rc == 0 else { throw AgentTestError("cannot start \(command[0]): \(String(cString: strerror(rc)))") }
        var connected = false
        _ = waitUntil(5) {
            guard let client = try? AgentClient(path: socketPath) else { return false }
            client.close()
            connected = true
            return true
        }
        guard connected else {
            stop()
            throw AgentTestError("the agent did not listen on \(socketPath) within 5 s; its log:\n\(log)")
        }
    }

    /// A new connection (a new link).
    func connect() throws -> AgentClient { try AgentClient(path: socketPath) }

    /// The agent's stderr so far.
    var log: String { readText(logPath) ?? "" }

    /// SIGTERM (the agent kills its sessions), then SIGKILL after 5 s; reaps it.
    func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        var status: Int32 = 0
        if !waitUntil(5, { waitpid(pid, &status, WNOHANG) == pid }) {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
        }
        pid = 0
    }

    /// Stops the agent and removes its directory.
    func finish() {
        stop()
        directory.remove()
    }

    deinit { stop() }
}
