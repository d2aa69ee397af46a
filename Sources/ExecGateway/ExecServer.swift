#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Wakeup

/// The exec WebSocket gateway: serves `GET /instances/{ref}/exec` (HTTP/1.1 + Upgrade, as nginx
/// proxies it) on a Unix stream socket, one thread per connection, and runs each session through
/// an `ExecBackend`. `start()` binds and returns; `stop()` ends everything.
public final class ExecServer: Sendable {
    public let socketPath: String
    private let backend: any ExecBackend
    private let slots: SessionSlots
    private let limits: Limits
    private let log: @Sendable (String) -> Void
    private let state = Mutex(State())

    /// Time and size limits of one connection (tests shorten them).
    struct Limits: Sendable {
        /// To receive the request line and headers.
        var headSeconds = 10.0
        /// From the 101 to the client's exec request.
        var firstMessageSeconds = 30.0
        /// For the client's close frame after the server's (and for reading an error response).
        var closeGraceSeconds = 1.0
        /// Largest WebSocket message from the client (close 1009 above it).
        var maxMessageSize = 1 << 20
        /// Connections still in their HTTP phase, beyond the live sessions, before new ones get 503.
        var extraConnections = 64
    }

    private struct State {
        var listenFD: Int32 = -1
        var wakeFDs: (read: Int32, write: Int32) = (-1, -1)
        var acceptThread: pthread_t?
        var connections: [Int: ExecConnection] = [:]
        var nextID = 0
        var stopping = false
    }

    public enum StartError: Error, CustomStringConvertible {
        case socket(String)
        public var description: String { if case .socket(let s) = self { return s }; return "" }
    }

    /// - Parameters:
    ///   - socketPath: where to listen (nginx's `proxy_pass http://unix:<path>:`).
    ///   - maxSessions: live sessions allowed at once; more get 503 `limit_exceeded`.
    ///   - log: one line per finished session (default: stderr, prefixed `exec: `).
    public convenience init(socketPath: String, backend: any ExecBackend, maxSessions: Int = 64,
                            log: @escaping @Sendable (String) -> Void = ExecServer.logToStderr) {
        self.init(socketPath: socketPath, backend: backend, maxSessions: maxSessions, limits: Limits(), log: log)
    }

    init(socketPath: String, backend: any ExecBackend, maxSessions: Int, limits: Limits,
         log: @escaping @Sendable (String) -> Void) {
        self.socketPath = socketPath
        self.backend = backend
        self.slots = SessionSlots(max: maxSessions)
        self.limits = limits
        self.log = log
    }

    /// Writes `exec: <line>` to stderr.
    public static let logToStderr: @Sendable (String) -> Void = { line in
        writeToStderr("exec: \(line)\n")
    }

    /// Live sessions (upgraded connections).
    public var liveSessions: Int { slots.inUse }

    /// Binds the socket (replacing a stale socket file; mode 0660, group `HYPEMAN_SOCKET_GROUP`,
    /// see `SocketAccess`) and starts accepting.
    public func start() throws(StartError) {
        let access: SocketAccess
        switch SocketAccess.current {
        case .success(let a): access = a
        case .failure(let e): throw .socket(e.description)
        }
        if let warning = access.warning { log(warning) }
        guard state.withLock({ $0.listenFD < 0 }) else { throw .socket("the exec server on \(socketPath) is already running") }
        signal(SIGPIPE, SIG_IGN)
        guard socketPath.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else {
            throw .socket("exec socket path \(socketPath) is too long for a Unix socket (max 107 bytes): use a shorter run directory")
        }
        var st = stat()
        if lstat(socketPath, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else {
                throw .socket("\(socketPath) exists and is not a socket: remove it or choose another exec socket path")
            }
            unlink(socketPath)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .socket("socket(AF_UNIX): \(errnoText())") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in pathBytes.enumerated() { raw[i] = b }
        }
        let bound = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            let e = errnoText()
            close(fd)
            throw .socket("cannot bind the exec socket \(socketPath): \(e)")
        }
        // nginx's workers (another user, in the socket group) connect here, as to the FastCGI
        // sockets; nobody else but root may. Until now the socket had the umask's mode, which
        // never lets others write (connect).
        if let problem = access.apply(toSocket: socketPath) { log(problem) }
        guard listen(fd, 128) == 0 else {
            let e = errnoText()
            close(fd); unlink(socketPath)
            throw .socket("cannot listen on \(socketPath): \(e)")
        }
        guard let wake = makeWakePair() else {
            let e = errnoText()
            close(fd); unlink(socketPath)
            throw .socket("socketpair: \(e)")
        }
        state.withLock { s in
            s.listenFD = fd
            s.wakeFDs = wake
            s.stopping = false
        }
        guard let tid = spawnThread(detached: false, { [self] in acceptLoop(listenFD: fd, wakeFD: wake.read) }) else {
            closeListener()
            throw .socket("cannot start the exec accept thread: \(errnoText())")
        }
        state.withLock { $0.acceptThread = tid }
    }

    /// Stops accepting, closes the socket file, cancels live sessions (as if their clients left)
    /// and waits for every connection thread to finish.
    public func stop() {
        let (thread, wakeFD) = state.withLock { s -> (pthread_t?, Int32) in
            s.stopping = true
            defer { s.acceptThread = nil }
            return (s.acceptThread, s.wakeFDs.write)
        }
        if let thread {
            var b: UInt8 = 1
            _ = write(wakeFD, &b, 1)
            pthread_join(thread, nil)
        }
        closeListener()
        for c in state.withLock({ Array($0.connections.values) }) { c.socket.shutdownBoth() }
        let deadline = monotonicSeconds() + 30
        while state.withLock({ !$0.connections.isEmpty }) {
            if monotonicSeconds() > deadline {
                log("stop: \(state.withLock { $0.connections.count }) connection(s) still finishing after 30 s; not waiting longer")
                return
            }
            usleep(5_000)
        }
    }

    private func closeListener() {
        state.withLock { s in
            if s.listenFD >= 0 { close(s.listenFD); unlink(socketPath); s.listenFD = -1 }
            if s.wakeFDs.read >= 0 { close(s.wakeFDs.read); close(s.wakeFDs.write); s.wakeFDs = (-1, -1) }
        }
    }

    private func acceptLoop(listenFD: Int32, wakeFD: Int32) {
        while true {
            var fds = [pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, 2, -1)
            if n < 0 && errno == EINTR { continue }
            if n < 0 || fds[1].revents != 0 { return }
            let conn = accept(listenFD, nil, nil)
            if conn >= 0 { _ = fcntl(conn, F_SETFD, FD_CLOEXEC) }
            if conn < 0 {
                if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM {
                    log("accept: \(errnoText()); retrying in 100 ms")
                    usleep(100_000)
                }
                continue
            }
            serve(conn)
        }
    }

    /// Registers a connection and starts its thread (or refuses it when too many are open).
    private func serve(_ fd: Int32) {
        guard let socket = ConnectionSocket(fd: fd) else { return }
        let connection = ExecConnection(socket: socket, backend: backend, slots: slots, limits: limits, log: log)
        let id: Int? = state.withLock { s in
            guard !s.stopping, s.connections.count < slots.max + limits.extraConnections else { return nil }
            s.nextID += 1
            s.connections[s.nextID] = connection
            return s.nextID
        }
        guard let id else {
            socket.write(HTTPResponse.error(.limitExceeded(slots.max)))
            socket.close()
            return
        }
        let started = spawnThread(detached: true) { [self] in
            connection.run()
            _ = state.withLock { $0.connections.removeValue(forKey: id) }
        }
        if started == nil {
            log("cannot start a connection thread: \(errnoText())")
            socket.close()
            _ = state.withLock { $0.connections.removeValue(forKey: id) }
        }
    }
}
