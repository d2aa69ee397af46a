import CCurl
import Digest
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `curl_global_init` exactly once per process (Swift runs a global's initializer once, thread-safely).
private let curlGlobalInit: Int = Int(ccurl_global_init_default().rawValue)

/// A libcurl easy handle. Not thread-safe: use one client per thread. Connections are kept alive
/// between requests on the same client.
public final class HTTPClient {
    private let handle: UnsafeMutableRawPointer
    private let errorBuffer: UnsafeMutablePointer<CChar>
    public var userAgent = "hypeman-swift/0.1"

    public init() throws(HTTPError) {
        guard curlGlobalInit == 0 else { throw .invalidRequest("curl_global_init failed (\(curlGlobalInit))") }
        guard let h = curl_easy_init() else { throw .invalidRequest("curl_easy_init failed") }
        handle = h
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        curl_easy_cleanup(handle)
        errorBuffer.deallocate()
    }

    /// General request (REST over TCP or a Unix socket): body kept in memory up to `maxBody` bytes.
    public func request(method: String, url: String, headers: [HTTPHeader] = [], body: [UInt8]? = nil,
                        unixSocket: String? = nil, timeout: Double? = 30,
                        maxBody: Int = 16 << 20) throws(HTTPError) -> HTTPResponse {
        let req = HTTPRequest(method: method, url: url, headers: headers, body: body, unixSocket: unixSocket,
                              totalTimeout: timeout)
        return try perform(req, sink: .memory(limit: maxBody))
    }

    /// Performs one request. `progress(downloadedNow, downloadTotal)` is called as bytes arrive
    /// (total is 0 when unknown); returning false aborts with `.aborted`.
    public func perform(_ req: HTTPRequest, sink: HTTPSink = .memory(limit: 16 << 20),
                        progress: ((Int64, Int64) -> Bool)? = nil) throws(HTTPError) -> HTTPResponse {
        curl_easy_reset(handle)
        errorBuffer[0] = 0
        let ctx = TransferContext(handle: handle, sink: sink, progress: progress)
        var slist: UnsafeMutablePointer<curl_slist>? = nil
        defer { if let slist { curl_slist_free_all(slist) } }

        func check(_ rc: CURLcode, _ what: String) throws(HTTPError) {
            if rc != CURLE_OK { throw .invalidRequest("\(what): \(String(cString: curl_easy_strerror(rc)))") }
        }
        let method = req.method.uppercased()
        guard !method.isEmpty, method.utf8.allSatisfy({ $0 >= 65 && $0 <= 90 }) else {
            throw .invalidRequest("bad method \"\(req.method)\"")
        }
        try check(ccurl_setopt_str(handle, CURLOPT_URL, req.url), "URL \(req.url)")
        try check(ccurl_setopt_ptr(handle, CURLOPT_ERRORBUFFER, UnsafeMutableRawPointer(errorBuffer)), "error buffer")
        try check(ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1), "nosignal")
        try check(ccurl_setopt_str(handle, CURLOPT_PROTOCOLS_STR, "http,https"), "protocols")
        let redirectProtocols = req.url.lowercased().hasPrefix("https:") ? "https" : "http,https"
        try check(ccurl_setopt_str(handle, CURLOPT_REDIR_PROTOCOLS_STR, redirectProtocols), "redirect protocols")
        try check(ccurl_setopt_str(handle, CURLOPT_USERAGENT, userAgent), "user agent")
        try check(ccurl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, req.followRedirects ? 1 : 0), "follow")
        try check(ccurl_setopt_long(handle, CURLOPT_MAXREDIRS, req.maxRedirects), "max redirects")
        try check(ccurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, max(1, Int(req.connectTimeout * 1000))), "connect timeout")
        if let t = req.totalTimeout {
            try check(ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, max(1, Int(t * 1000))), "timeout")
        }
        if req.lowSpeedLimit > 0 && req.lowSpeedTime > 0 {
            try check(ccurl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, req.lowSpeedLimit), "low speed limit")
            try check(ccurl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, req.lowSpeedTime), "low speed time")
        }
        // A bigger receive buffer means fewer callbacks; curl refuses a change after some failed
        // transfers on a handle, which is harmless, so the result is ignored.
        _ = ccurl_setopt_long(handle, CURLOPT_BUFFERSIZE, 512 * 1024)
        if let sock = req.unixSocket {
            try check(ccurl_setopt_str(handle, CURLOPT_UNIX_SOCKET_PATH, sock), "unix socket")
        }

        switch method {
        case "GET": try check(ccurl_setopt_long(handle, CURLOPT_HTTPGET, 1), "GET")
        case "HEAD": try check(ccurl_setopt_long(handle, CURLOPT_NOBODY, 1), "HEAD")
        default: try check(ccurl_setopt_str(handle, CURLOPT_CUSTOMREQUEST, method), "method")
        }
        if let body = req.body {
            try check(ccurl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count)), "body size")
            let rc = body.withUnsafeBytes { raw -> CURLcode in
                // COPYPOSTFIELDS copies the bytes; an empty body still needs a valid pointer.
                if let base = raw.baseAddress { return ccurl_setopt_ptr(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: base)) }
                return ccurl_setopt_str(handle, CURLOPT_COPYPOSTFIELDS, "")
            }
            try check(rc, "body")
        }

        var headerLines = req.headers.map { "\($0.name): \($0.value)" }
        if req.body != nil && !req.headers.contains(where: { $0.name.lowercased() == "expect" }) {
            headerLines.append("Expect:")   // no 100-continue round trip
        }
        for line in headerLines {
            guard !line.utf8.contains(where: { $0 == 13 || $0 == 10 }) else { throw .invalidRequest("header contains a line break") }
            guard let next = curl_slist_append(slist, line) else { throw .invalidRequest("out of memory for headers") }
            slist = next
        }
        if let slist { try check(ccurl_setopt_slist(handle, CURLOPT_HTTPHEADER, slist), "headers") }

        let ctxPtr = Unmanaged.passUnretained(ctx).toOpaque()
        try check(ccurl_setopt_datafn(handle, CURLOPT_WRITEFUNCTION, httpWriteCallback), "write function")
        try check(ccurl_setopt_ptr(handle, CURLOPT_WRITEDATA, ctxPtr), "write data")
        try check(ccurl_setopt_datafn(handle, CURLOPT_HEADERFUNCTION, httpHeaderCallback), "header function")
        try check(ccurl_setopt_ptr(handle, CURLOPT_HEADERDATA, ctxPtr), "header data")
        if progress != nil {
            try check(ccurl_setopt_long(handle, CURLOPT_NOPROGRESS, 0), "progress")
            try check(ccurl_setopt_xferinfofn(handle, httpProgressCallback), "progress function")
            try check(ccurl_setopt_ptr(handle, CURLOPT_XFERINFODATA, ctxPtr), "progress data")
        }

        let rc = withExtendedLifetime(ctx) { curl_easy_perform(handle) }
        if let failure = ctx.failure { throw failure }
        if rc != CURLE_OK {
            let detail = errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: curl_easy_strerror(rc))
            if rc == CURLE_OPERATION_TIMEDOUT { throw .timedOut(detail) }
            if rc == CURLE_ABORTED_BY_CALLBACK { throw .aborted }
            if rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL { throw .invalidRequest(detail) }
            throw .transport(code: Int(rc.rawValue), message: detail)
        }
        var status: Int = 0
        _ = ccurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        var urlPtr: UnsafeMutablePointer<CChar>? = nil
        _ = ccurl_getinfo_str(handle, CURLINFO_EFFECTIVE_URL, &urlPtr)
        let effective = urlPtr.map { String(cString: $0) } ?? req.url
        return HTTPResponse(status: status, headers: ctx.headers, body: ctx.memory,
                            bodyBytes: ctx.delivered, effectiveURL: effective)
    }
}

/// State one transfer's callbacks share; reached from C through an unretained pointer.
final class TransferContext {
    let handle: UnsafeMutableRawPointer
    let sink: HTTPSink
    let progress: ((Int64, Int64) -> Bool)?
    var headers: [HTTPHeader] = []
    var memory: [UInt8] = []
    var delivered: Int64 = 0
    var failure: HTTPError?
    /// Bound on a non-2xx body kept from a file transfer.
    static let errorBodyLimit = 64 * 1024

    init(handle: UnsafeMutableRawPointer, sink: HTTPSink, progress: ((Int64, Int64) -> Bool)?) {
        self.handle = handle; self.sink = sink; self.progress = progress
    }

    private var currentStatus: Int {
        var status: Int = 0
        _ = ccurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return status
    }

    /// Returns the count consumed; anything else makes curl stop with a write error.
    func receive(_ bytes: UnsafeRawBufferPointer) -> Int {
        switch sink {
        case .memory(let limit):
            if memory.count + bytes.count > limit { failure = .bodyTooLarge(limit: Int64(limit)); return 0 }
            memory.append(contentsOf: bytes)
            delivered += Int64(bytes.count)
            return bytes.count
        case .file(let fd, let hasher, let limit):
            let status = currentStatus
            guard (200..<300).contains(status) else {
                let room = max(0, Self.errorBodyLimit - memory.count)
                memory.append(contentsOf: bytes.prefix(room))
                return bytes.count
            }
            if let limit, delivered + Int64(bytes.count) > limit { failure = .bodyTooLarge(limit: limit); return 0 }
            guard let base = bytes.baseAddress else { return 0 }
            var off = 0
            while off < bytes.count {
                let n = write(fd, base + off, bytes.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = .writeFailed(errno: errno); return 0
                }
                off += n
            }
            hasher?.update(bytes)
            delivered += Int64(bytes.count)
            return bytes.count
        }
    }

    func headerLine(_ bytes: UnsafeRawBufferPointer) {
        var line = String(decoding: bytes, as: UTF8.self)
        while let last = line.last, last.isNewline { line.removeLast() }   // "\r\n" is one Character
        if line.hasPrefix("HTTP/") { headers.removeAll(); return }   // a new response (redirect, 100)
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = String(line[..<colon])
        let value = line[line.index(after: colon)...].trimmingSpaces()
        headers.append(HTTPHeader(name, value))
    }
}

extension Substring {
    func trimmingSpaces() -> String {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}

private let httpWriteCallback: ccurl_data_fn = { ptr, size, nmemb, userdata in
    guard let userdata else { return 0 }
    let ctx = Unmanaged<TransferContext>.fromOpaque(userdata).takeUnretainedValue()
    let count = size * nmemb
    guard count > 0, let ptr else { return 0 }
    return ctx.receive(UnsafeRawBufferPointer(start: ptr, count: count))
}

private let httpHeaderCallback: ccurl_data_fn = { ptr, size, nmemb, userdata in
    let count = size * nmemb
    guard let userdata, let ptr else { return count }
    let ctx = Unmanaged<TransferContext>.fromOpaque(userdata).takeUnretainedValue()
    ctx.headerLine(UnsafeRawBufferPointer(start: ptr, count: count))
    return count
}

private let httpProgressCallback: ccurl_xferinfo_fn = { userdata, dltotal, dlnow, _, _ in
    guard let userdata else { return 0 }
    let ctx = Unmanaged<TransferContext>.fromOpaque(userdata).takeUnretainedValue()
    guard let progress = ctx.progress else { return 0 }
    return progress(Int64(dlnow), Int64(dltotal)) ? 0 : 1
}
