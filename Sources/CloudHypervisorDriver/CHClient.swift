import Foundation
import HTTPFetch
import VMM

/// Cloud Hypervisor's REST API over its Unix socket (`http://localhost/api/v1/<endpoint>`).
///
/// Every call dials the socket afresh and closes it afterwards (`Connection: close`, a new
/// libcurl handle per call): CH's server is single-threaded and keeps connections open, and a
/// client that keeps them can pile them up. Body-less calls go out with no body and no
/// Content-Length; calls with a body send JSON with a Content-Length, never chunked, and no
/// `Expect: 100-continue`. Any 2xx is success (`vmm.shutdown` answers 200 although the spec says
/// 204). Failures stay apart: `.transport`/`.timeout` (socket, connect, read), `.status(code,
/// body)` for an error answer (CH sends 500 with a JSON array of error strings for every VMM
/// error; the body is kept for messages, never parsed for control flow) and `.decoding`.
/// The endpoint functions live in `Endpoints/`, one file per group.
public struct CHClient: Sendable {
    /// The API socket (`--api-socket`).
    public let socketPath: String
    /// Limit for ordinary calls, in seconds.
    public var timeout: Double
    /// Limit for calls that copy guest memory (`vm.snapshot`, `vm.restore`) and for `vm.boot`.
    public var longTimeout: Double

    public init(socketPath: String, timeout: Double = 30, longTimeout: Double = 600) {
        self.socketPath = socketPath; self.timeout = timeout; self.longTimeout = longTimeout
    }

    static let baseURL = "http://localhost/api/v1/"

    /// One request on a fresh connection. `body == nil` sends no body at all.
    func call(_ method: String, _ endpoint: String, body: [UInt8]? = nil, timeout: Double? = nil) throws(VMMError) -> HTTPResponse {
        var headers = [HTTPHeader("Accept", "application/json"), HTTPHeader("Connection", "close")]
        if body != nil { headers.append(HTTPHeader("Content-Type", "application/json")) }
        let limit = timeout ?? self.timeout
        // No low-speed abort: CH answers only when the operation is done (a snapshot can take minutes).
        let request = HTTPRequest(method: method, url: Self.baseURL + endpoint, headers: headers, body: body,
                                  unixSocket: socketPath, followRedirects: false, connectTimeout: min(5, limit),
                                  totalTimeout: limit, lowSpeedLimit: 0, lowSpeedTime: 0)
        let response: HTTPResponse
        do {
            let http = try HTTPClient()
            response = try http.perform(request, sink: .memory(limit: 16 << 20))
        } catch {
            switch error {
            case .timedOut(let detail): throw .timeout("\(endpoint) on \(socketPath): \(detail)")
            case .bodyTooLarge(let limit): throw .decoding("\(endpoint): answer larger than \(limit) bytes")
            default: throw .transport("\(endpoint) on \(socketPath): \(error)")
            }
        }
        guard response.isSuccess else {
            throw .status(response.status, String(decoding: response.body, as: UTF8.self))
        }
        return response
    }

    /// `PUT` with no body (CH answers 400 to a body on these actions).
    func put(_ endpoint: String, timeout: Double? = nil) throws(VMMError) {
        _ = try call("PUT", endpoint, body: nil, timeout: timeout)
    }

    /// `PUT` with a JSON body.
    func put<T: Encodable>(_ endpoint: String, _ value: T, timeout: Double? = nil) throws(VMMError) -> HTTPResponse {
        let body = try CHConfig.encode(value)
        guard body.count <= CHConfig.maxBodyBytes else {
            throw .unsupported("\(endpoint) body is \(body.count) bytes; Cloud Hypervisor reads at most \(CHConfig.maxBodyBytes)")
        }
        return try call("PUT", endpoint, body: body, timeout: timeout)
    }

    /// `GET` and decode the JSON answer.
    func get<T: Decodable>(_ endpoint: String, as type: T.Type, timeout: Double? = nil) throws(VMMError) -> T {
        let response = try call("GET", endpoint, timeout: timeout)
        return try decode(type, from: response, endpoint: endpoint)
    }

    func decode<T: Decodable>(_ type: T.Type, from response: HTTPResponse, endpoint: String) throws(VMMError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(response.body))
        } catch {
            let text = String(decoding: response.body.prefix(512), as: UTF8.self)
            throw .decoding("\(endpoint): expected \(T.self), got \(response.status) \"\(text)\": \(error)")
        }
    }
}
