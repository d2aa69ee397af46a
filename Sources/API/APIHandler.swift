import FastCGI
import JSON
import Model
import Store
import Wakeup
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How many threads of this process are waiting for a job right now (bounded so waits never
/// starve other requests).
let activeWaiters = Atomic<Int>(0)

/// The per-thread request handler: one SQLite connection and one wake-up socket per thread.
public final class APIHandler: RequestHandler {
    let config: APIConfig
    let store: Store
    let waiter: WakeupReceiver
    let log: @Sendable (String) -> Void

    public init(config: APIConfig, threadIndex: Int, log: @escaping @Sendable (String) -> Void) throws {
        self.config = config
        self.log = log
        store = try Store(path: config.dbPath)
        waiter = try WakeupReceiver(path: "\(config.runDir)/w/\(getpid())-\(threadIndex).sock")
    }

    public func handle(_ request: Request, _ ex: any Exchange) {
        // Route on exactly the path nginx authorised (checkedSegments), and only with the subject
        // nginx hands on after checking the bearer token, except on open routes.
        let segs: [String]
        switch checkedSegments(request.path, documentURI: request.documentURI) {
        case .ok(let s): segs = s
        case .refused(let why): return sendError(ex, APIError(.badRequestDomain, why))
        }
        let outcome = Router.shared.find(method: request.method, segments: segs)
        if request.subject.isEmpty {
            switch outcome {
            case .matched(let route, _) where route.open: break
            case .methodNotAllowed(_, open: true): break
            default: return sendUnauthorized(ex)
            }
        }
        switch outcome {
        case .notFound:
            sendError(ex, APIError(.notFound, "no route for \(request.method) \(request.path)"))
        case .methodNotAllowed(let allowed, _):
            sendError(ex, APIError(.methodNotAllowed, "method \(request.method) is not allowed on \(request.path); allowed: \(allowed.joined(separator: ", "))"),
                      headers: [("Allow", allowed.joined(separator: ", "))])
        case .matched(let route, let params):
            do {
                try route.handler(self, request, ex, params)
            } catch let e as APIError {
                sendError(ex, e)
            } catch {
                log("request \(request.requestID) \(request.method) \(request.path) failed: \(error)")
                sendError(ex, APIError(.internalError, "internal error (request id \(request.requestID))"))
            }
        }
    }

    // MARK: responses

    func send(_ ex: any Exchange, status: Int, _ body: JSONValue, headers: [(String, String)] = []) {
        send(ex, status: status, JSON.serialize(body), headers: headers)
    }

    /// Sends an already serialised JSON document.
    func send(_ ex: any Exchange, status: Int, _ json: [UInt8], headers: [(String, String)] = []) {
        var all = [("Content-Type", "application/json"), ("Content-Length", String(json.count))]
        if !headers.isEmpty { all += headers }
        ex.respond(status: status, headers: all, body: json)
    }

    func sendNoContent(_ ex: any Exchange, status: Int = 204) {
        ex.writeHead(status: status, headers: [])
    }

    /// 401 as nginx answers it (same body shape and headers): no authenticated subject.
    func sendUnauthorized(_ ex: any Exchange) {
        send(ex, status: 401, Self.unauthorizedBody,
             headers: [("WWW-Authenticate", "Bearer"), ("Cache-Control", "no-store")])
    }

    static let unauthorizedBody: [UInt8] = Array(#"{"code":"Unauthorized","message":"authorization header required"}"#.utf8)

    func sendError(_ ex: any Exchange, _ e: APIError, headers: [(String, String)] = []) {
        send(ex, status: e.status, ["code": .string(e.code.rawValue), "message": .string(e.message)], headers: headers)
    }

    // MARK: jobs

    /// Enqueues a job, wakes the Provisioner and waits (bounded) until the job is answered.
    /// Returns the job, or nil when the bound passed (the job goes on and its result is visible later).
    func runJob(_ kind: JobKind, target: String, payload: JSONValue = [:], wait seconds: Double? = nil) throws -> JobRecord? {
        let limit = max(1, config.threads - 2)
        let mayWait = activeWaiters.wrappingAdd(1, ordering: .relaxed).newValue <= limit
        defer { activeWaiters.wrappingSubtract(1, ordering: .relaxed) }
        waiter.drain()
        let id = try store.enqueue(kind, target: target, payload: payload, waiter: mayWait ? waiter.path : nil)
        wake(config.provisionerSocket)
        guard mayWait else { return nil }
        let deadline = Timestamp.monotonic() + (seconds ?? config.syncWaitSeconds)
        while true {
            if let j = try store.job(id: id), j.answered { return j }
            let left = deadline - Timestamp.monotonic()
            if left <= 0 { return nil }
            waiter.wait(timeoutMs: Int32(min(left, 0.5) * 1000))
        }
    }

    /// Throws the job's error when it failed.
    func check(_ job: JobRecord) throws {
        if job.state == .failed { throw job.error ?? APIError(.internalError, "job \(job.id) failed") }
    }
}
