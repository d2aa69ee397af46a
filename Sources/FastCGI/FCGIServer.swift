import CFCGI
#if canImport(Glibc)
import Glibc
#endif

/// A multi-threaded libfcgi responder on a Unix socket. `run()` blocks until SIGTERM/SIGINT, then
/// stops accepting, lets in-flight requests finish and returns (libfcgi alone does not exit on
/// SIGTERM: stack-probe.md §1, pitfall 5).
public final class FCGIServer: Sendable {
    public let socketPath: String
    public let threads: Int
    /// Who may connect: the socket's group (nil: root only) and mode (0660 with a group).
    public let socketGroup: gid_t?
    public let socketMode: mode_t
    let factory: HandlerFactory
    let log: @Sendable (String) -> Void
    let turns = AcceptTurns()

    /// - Parameters:
    ///   - socketGroup: the group whose members (nginx's workers) may connect; nil: root only.
    ///   - socketMode: the socket's mode, 0660 by default (0600 is forced without a group).
    public init(socketPath: String, threads: Int, socketGroup: gid_t? = nil, socketMode: mode_t = 0o660,
                log: @escaping @Sendable (String) -> Void, factory: @escaping HandlerFactory) {
        self.socketPath = socketPath
        self.threads = max(1, threads)
        self.socketGroup = socketGroup
        self.socketMode = socketGroup == nil ? 0o600 : socketMode
        self.factory = factory
        self.log = log
    }

    public enum StartError: Error, CustomStringConvertible {
        case socket(String)
        public var description: String { if case .socket(let s) = self { return s }; return "" }
    }

    public func run() throws {
        signal(SIGPIPE, SIG_IGN)
        guard FCGX_Init() == 0 else { throw StartError.socket("FCGX_Init failed") }
        guard socketPath.utf8.count < 100 else {
            throw StartError.socket("socket path \(socketPath) is too long for a Unix socket (max ~100 bytes): choose a shorter HYPEMAN_RUN_DIR")
        }
        let fd = FCGX_OpenSocket(socketPath, 1024)
        guard fd >= 0 else { throw StartError.socket("cannot listen on \(socketPath): \(String(cString: strerror(errno)))") }
        // nginx's workers run as another user in the socket group: they, and nobody else but
        // root, may connect. (Until here the socket has the umask's mode: 0700 under systemd,
        // 0755 elsewhere; connecting needs write permission, so nobody else could.)
        if let socketGroup, chown(socketPath, uid_t.max, socketGroup) != 0 {
            let e = String(cString: strerror(errno))
            chmod(socketPath, 0o600)
            log("cannot give \(socketPath) to group \(socketGroup): \(e); the socket is root-only (0600), nginx workers running as another user will get 502")
        } else {
            chmod(socketPath, socketMode)
        }

        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_BLOCK, &set, nil)

        // The monitor first: without it a slow request would hold up accepting.
        var monitor = pthread_t()
        let monitorRC = pthread_create(&monitor, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<AcceptTurns>.fromOpaque(raw).takeRetainedValue().monitor()
            return nil
        }, Unmanaged.passRetained(turns).toOpaque())
        guard monitorRC == 0 else {
            throw StartError.socket("cannot start the accept monitor thread: \(String(cString: strerror(monitorRC))) — check the process and thread limits")
        }

        var tids: [pthread_t] = []
        for i in 0..<threads {
            let ctx = WorkerContext(server: self, index: i, listenFD: fd)
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { raw in
                guard let raw else { return nil }
                let ctx = Unmanaged<WorkerContext>.fromOpaque(raw).takeRetainedValue()
                ctx.server.workerLoop(ctx)
                return nil
            }, Unmanaged.passRetained(ctx).toOpaque())
            if rc == 0 { tids.append(tid) }
        }
        log("listening on \(socketPath) with \(tids.count) threads")

        var sig: Int32 = 0
        sigwait(&set, &sig)
        log("signal \(sig): shutting down")
        FCGX_ShutdownPending()
        shutdown(fd, Int32(SHUT_RDWR))
        for t in tids { pthread_join(t, nil) }
        turns.stop()
        pthread_join(monitor, nil)
        close(fd)
        unlink(socketPath)
    }

    final class WorkerContext: Sendable {
        let server: FCGIServer
        let index: Int
        let listenFD: Int32
        init(server: FCGIServer, index: Int, listenFD: Int32) {
            self.server = server; self.index = index; self.listenFD = listenFD
        }
    }

    func workerLoop(_ ctx: WorkerContext) {
        let handler: any RequestHandler
        do {
            handler = try factory(ctx.index)
        } catch {
            log("worker \(ctx.index) failed to start: \(error)")
            return
        }
        let req = UnsafeMutablePointer<FCGX_Request>.allocate(capacity: 1)
        defer { req.deallocate() }
        FCGX_InitRequest(req, ctx.listenFD, 0)
        let waiter = AcceptTurns.Waiter()
        while true {
            turns.take(waiter)
            guard FCGX_Accept_r(req) >= 0 else {
                turns.pass(waiter)
                break
            }
            turns.startHandling(waiter)
            let request = Self.readRequest(req)
            let ex = FCGIExchange(req)
            handler.handle(request, ex)
            ex.finishIfNeeded()
            Self.skipLingerWhenDrained(req)
            FCGX_Finish_r(req)
            turns.finishHandling(waiter)
        }
        FCGX_Free(req, 1)
    }

    /// libfcgi ends every connection with a lingering close: shutdown, then sleep in poll until
    /// nginx closes its end, reading whatever it still sends, so that unread request bytes never
    /// make the kernel reset the connection. That sleep and wake-up is paid on every request. When
    /// the request has been read to its end (the rest of a body is read here, up to 64 KiB) and
    /// nothing is pending on the socket, nothing can be reset: `FCGX_Detach` then makes
    /// `FCGX_Finish_r` close at once. Anything else keeps the lingering close.
    static func skipLingerWhenDrained(_ req: UnsafeMutablePointer<FCGX_Request>) {
        guard let input = req.pointee.`in`, req.pointee.ipcFd > 0 else { return }
        let drained: Bool = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 4096) { buf in
            var budget = 64 * 1024
            while budget > 0 {
                let n = FCGX_GetStr(buf.baseAddress, Int32(buf.count), input)
                if n < Int32(buf.count) { break }
                budget -= Int(n)
            }
            return FCGX_HasSeenEOF(input) == EOF && FCGX_GetError(input) == 0
        }
        guard drained else { return }
        var byte: UInt8 = 0
        let peeked = recv(req.pointee.ipcFd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        // Nothing queued (EAGAIN), or nginx already closed (0): a plain close is clean.
        if peeked == 0 || (peeked < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            FCGX_Detach(req)
        }
    }

    static func param(_ req: UnsafeMutablePointer<FCGX_Request>, _ name: String) -> String {
        guard let p = FCGX_GetParam(name, req.pointee.envp) else { return "" }
        return String(cString: p)
    }

    static func readRequest(_ req: UnsafeMutablePointer<FCGX_Request>) -> Request {
        // REQUEST_URI only: DOCUMENT_URI is already decoded (routing on it would decode twice).
        let uri = param(req, "REQUEST_URI")
        var path = uri, query = param(req, "QUERY_STRING")
        if let q = uri.firstIndex(of: "?") {
            path = String(uri[..<q])
            query = String(uri[uri.index(after: q)...])
        }
        return Request(method: param(req, "REQUEST_METHOD"), path: path, query: query,
                       contentType: param(req, "CONTENT_TYPE"), contentLength: Int(param(req, "CONTENT_LENGTH")) ?? 0,
                       subject: param(req, "HTTP_X_AUTH_SUBJECT"), requestID: param(req, "HTTP_X_REQUEST_ID"),
                       documentURI: param(req, "DOCUMENT_URI"))
    }
}

/// libfcgi streams for one request; never escapes its worker thread.
final class FCGIExchange: Exchange {
    let req: UnsafeMutablePointer<FCGX_Request>
    var headWritten = false
    var broken = false

    init(_ req: UnsafeMutablePointer<FCGX_Request>) { self.req = req }

    func readBody(max: Int) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: max)
        let n = buf.withUnsafeMutableBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max) { FCGX_GetStr($0, Int32(max), req.pointee.`in`) }
        }
        if n <= 0 { return [] }
        buf.removeLast(max - Int(n))
        return buf
    }

    func writeHead(status: Int, headers: [(String, String)]) {
        guard !headWritten else { return }
        headWritten = true
        var head: [UInt8] = []
        Self.appendHead(&head, status: status, headers: headers)
        write(head)
    }

    func respond(status: Int, headers: [(String, String)], body: [UInt8]) {
        guard !headWritten else { return }
        headWritten = true
        var out: [UInt8] = []
        out.reserveCapacity(160 + body.count)
        Self.appendHead(&out, status: status, headers: headers)
        out.append(contentsOf: body)
        write(out)
    }

    /// `Status: 200 OK\r\n`, the headers, the blank line. A header whose name or value holds a
    /// CR or LF byte is dropped (no header injection).
    static func appendHead(_ out: inout [UInt8], status: Int, headers: [(String, String)]) {
        out.append(contentsOf: "Status: \(status) \(reasonPhrase(status))\r\n".utf8)
        for (k, v) in headers {
            if k.utf8.contains(where: { $0 == 13 || $0 == 10 }) || v.utf8.contains(where: { $0 == 13 || $0 == 10 }) { continue }
            out.append(contentsOf: k.utf8)
            out.append(UInt8(ascii: ":"))
            out.append(UInt8(ascii: " "))
            out.append(contentsOf: v.utf8)
            out.append(13)
            out.append(10)
        }
        out.append(13)
        out.append(10)
    }

    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        if broken { return false }
        if bytes.isEmpty { return true }
        let n = bytes.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { FCGX_PutStr($0, Int32(b.count), req.pointee.out) }
        }
        if n < 0 { broken = true }
        return !broken
    }

    @discardableResult
    func flush() -> Bool {
        if broken { return false }
        if FCGX_FFlush(req.pointee.out) < 0 || FCGX_GetError(req.pointee.out) != 0 { broken = true }
        return !broken
    }

    func finishIfNeeded() {
        if !headWritten {
            writeHead(status: 500, headers: [("Content-Type", "application/json")])
            write(Array(#"{"code":"internal_error","message":"no response"}"#.utf8))
        }
    }
}
