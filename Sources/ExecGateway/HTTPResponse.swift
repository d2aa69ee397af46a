import JSON
import Model

extension ExecHTTPError {
    /// 400 invalid_request: a malformed request or WebSocket handshake.
    static func invalidRequest(_ message: String) -> ExecHTTPError {
        ExecHTTPError(status: ErrorCode.invalidRequest.httpStatus, code: ErrorCode.invalidRequest.rawValue, message: message)
    }

    /// 404 not_found.
    static func notFound(_ message: String) -> ExecHTTPError {
        ExecHTTPError(status: ErrorCode.notFound.httpStatus, code: ErrorCode.notFound.rawValue, message: message)
    }

    /// 401 as nginx answers it: no authenticated subject (`X-Auth-Subject`) came with the request.
    static let unauthorized = ExecHTTPError(status: 401, code: ErrorCode.unauthorized.rawValue,
                                            message: "authorization header required")

    /// 503 limit_exceeded: every session slot is in use.
    static func limitExceeded(_ max: Int) -> ExecHTTPError {
        ExecHTTPError(status: 503, code: ErrorCode.limitExceeded.rawValue,
                      message: "too many exec sessions (\(max) are running): retry when one has finished")
    }
}

/// The HTTP responses the gateway writes itself: JSON errors before the upgrade and the 101.
enum HTTPResponse {
    /// `status` + `{"code","message"}` with `Connection: close`; `extraHeaders` go first.
    static func error(_ e: ExecHTTPError, extraHeaders: [(String, String)] = []) -> [UInt8] {
        let body = JSON.serialize(.object(["code": .string(e.code), "message": .string(e.message)]))
        var head = "HTTP/1.1 \(e.status) \(reasonPhrase(e.status))\r\n"
        for (k, v) in extraHeaders { head += "\(k): \(v)\r\n" }
        head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + body
    }

    /// The headers an error needs besides the defaults (405: `Allow: GET`; 401: `WWW-Authenticate`).
    static func extraHeaders(for e: ExecHTTPError) -> [(String, String)] {
        switch e.status {
        case 405: return [("Allow", "GET")]
        case 401: return [("WWW-Authenticate", "Bearer"), ("Cache-Control", "no-store")]
        default: return []
        }
    }

    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 101: return "Switching Protocols"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 409: return "Conflict"
        case 429: return "Too Many Requests"
        case 500: return "Internal Server Error"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        default: return "Error"
        }
    }
}
