import CFCGI
#if canImport(Glibc)
import Glibc
#endif

/// A request as nginx passes it: method, raw URI, content headers, the authenticated subject.
/// Everything is copied into Swift values before the next request reuses libfcgi's memory.
public struct Request: Sendable {
    public var method: String
    /// The raw request URI (still percent-encoded), without the query string.
    public var path: String
    /// The raw query string (without `?`).
    public var query: String
    public var contentType: String
    public var contentLength: Int
    /// `X-Auth-Subject` set by nginx after verifying the bearer token ("" on open locations
    /// and when nginx did not pass one).
    public var subject: String
    public var requestID: String
    public var params: [String: String]
    /// nginx's `$uri` (DOCUMENT_URI): the path it chose its location by — percent-decoded, dot
    /// segments resolved, slashes merged. "" when not passed.
    public var documentURI: String

    public init(method: String, path: String, query: String = "", contentType: String = "", contentLength: Int = 0,
                subject: String = "", requestID: String = "", params: [String: String] = [:], documentURI: String = "") {
        self.method = method; self.path = path; self.query = query; self.contentType = contentType
        self.contentLength = contentLength; self.subject = subject; self.requestID = requestID; self.params = params
        self.documentURI = documentURI
    }
}

/// The body and response side of one in-flight request. Thread-confined.
public protocol Exchange: AnyObject {
    /// Reads up to `max` bytes of the body (fewer at the end); empty when done.
    func readBody(max: Int) -> [UInt8]
    /// Writes the status line and headers. Call once, before any body bytes.
    func writeHead(status: Int, headers: [(String, String)])
    /// Writes body bytes. Returns false when the client has gone away.
    @discardableResult func write(_ bytes: [UInt8]) -> Bool
    /// Pushes buffered bytes to nginx now (SSE). Returns false when the client has gone away.
    @discardableResult func flush() -> Bool
    /// A whole response: head and body. Same as `writeHead` then `write`, which is what the
    /// default does; the FastCGI exchange hands both to libfcgi in one piece.
    func respond(status: Int, headers: [(String, String)], body: [UInt8])
}

extension Exchange {
    public func respond(status: Int, headers: [(String, String)], body: [UInt8]) {
        writeHead(status: status, headers: headers)
        write(body)
    }
}

extension Exchange {
    /// Reads the whole body up to `limit` bytes; nil when it is larger.
    public func readAll(limit: Int) -> [UInt8]? {
        var out: [UInt8] = []
        while true {
            let chunk = readBody(max: 64 * 1024)
            if chunk.isEmpty { return out }
            out += chunk
            if out.count > limit { return nil }
        }
    }
}

/// Serves one request on the calling thread. Each worker thread gets its own handler instance
/// (with its own database connection), so implementations need no locking.
public protocol RequestHandler: AnyObject {
    func handle(_ request: Request, _ exchange: any Exchange)
}

/// Creates a handler for a worker thread; called on that thread.
public typealias HandlerFactory = @Sendable (_ threadIndex: Int) throws -> any RequestHandler

/// Status reason phrases for the `Status:` line.
public func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 200: return "OK"
    case 201: return "Created"
    case 202: return "Accepted"
    case 204: return "No Content"
    case 400: return "Bad Request"
    case 401: return "Unauthorized"
    case 404: return "Not Found"
    case 405: return "Method Not Allowed"
    case 409: return "Conflict"
    case 413: return "Payload Too Large"
    case 500: return "Internal Server Error"
    case 501: return "Not Implemented"
    case 503: return "Service Unavailable"
    case 504: return "Gateway Timeout"
    default: return "Status"
    }
}
