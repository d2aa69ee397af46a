import FastCGI
import JSON
import Model
import Store
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `GET /instances/{id}/logs`: SSE, one `data: "<line as JSON string>"` event per line; `tail`
/// lines first, then (with `follow=true`) new lines until the client leaves or the instance is
/// deleted. No time cut-off; a comment line every 15 s notices departed clients.
/// Followed streams of this process right now: each pins a worker thread, so at most half the
/// threads may follow (the rest keep serving the API).
let activeFollowers = Atomic<Int>(0)

enum LogStream {
    static let sources = ["app", "vmm", "hypeman"]
    static let maxTail = 100_000

    static func queryError(_ name: String, _ why: String) -> APIError {
        APIError(.badRequest, "parameter \"\(name)\" in query has an error: \(why)")
    }

    static func serve(_ h: APIHandler, _ req: Request, _ ex: any Exchange, _ key: String) throws {
        let q = parseQuery(req.query)
        var tail = 100
        if let t = q["tail"] {
            guard let v = Int(t) else { throw queryError("tail", "value \(t): an invalid integer") }
            guard v >= 0 else { throw queryError("tail", "number must be at least 0") }
            tail = min(v, maxTail)
        }
        var follow = false
        if let f = q["follow"] {
            switch f.lowercased() {
            case "true", "1": follow = true
            case "false", "0", "": follow = false
            default: throw queryError("follow", "value \(f): an invalid boolean")
            }
        }
        let source = q["source"] ?? "app"
        guard sources.contains(source) else { throw queryError("source", "value is not one of the allowed values [app vmm hypeman]") }
        let inst = try h.store.resolveInstance(key).get()
        let path = "\(h.config.dataDir)/guests/\(inst.id)/logs/\(source).log"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw APIError(.logNotFound, "requested log file does not exist yet") }
        defer { close(fd) }

        if follow {
            let n = activeFollowers.wrappingAdd(1, ordering: .relaxed).newValue
            if n > max(1, h.config.threads / 2) {
                activeFollowers.wrappingSubtract(1, ordering: .relaxed)
                throw APIError(.unavailable, "too many followed log streams on this worker (\(n - 1)); retry later, or raise FCGI_THREADS")
            }
        }
        defer { if follow { activeFollowers.wrappingSubtract(1, ordering: .relaxed) } }
        ex.writeHead(status: 200, headers: [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                                            ("X-Accel-Buffering", "no")])
        var offset = sendTail(fd, tail, ex)
        guard follow, ex.flush() else { return }
        var pending: [UInt8] = []
        var lastWrite = Timestamp.monotonic()
        while true {
            var st = stat()
            if fstat(fd, &st) != 0 || st.st_nlink == 0 { return }   // deleted with its instance
            let size = Int64(st.st_size)
            if size < offset { offset = 0; pending.removeAll() }      // truncated or rotated
            if size > offset {
                let chunk = readAt(fd, offset, Int(min(size - offset, 1 << 20)))
                offset += Int64(chunk.count)
                pending += chunk
                var start = 0
                var out: [UInt8] = []
                for i in 0..<pending.count where pending[i] == 10 {
                    out += event(pending[start..<i])
                    start = i + 1
                }
                pending.removeFirst(start)
                if !out.isEmpty {
                    guard ex.write(out), ex.flush() else { return }
                    lastWrite = Timestamp.monotonic()
                }
                continue
            }
            if Timestamp.monotonic() - lastWrite > 15 {
                guard ex.write(Array(": keepalive\n\n".utf8)), ex.flush() else { return }
                lastWrite = Timestamp.monotonic()
            }
            usleep(100_000)
        }
    }

    /// Sends the last `n` complete lines; returns the offset after the last complete line sent.
    static func sendTail(_ fd: Int32, _ n: Int, _ ex: any Exchange) -> Int64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return 0 }
        let size = Int64(st.st_size)
        var start = size
        var data: [UInt8] = []
        let cap: Int64 = 16 << 20
        // Read backwards until n+1 newlines are in hand (or the start / the cap is reached).
        while start > 0 && size - start < cap {
            let step = min(start, 64 * 1024)
            start -= step
            data = readAt(fd, start, Int(step)) + data
            if data.reduce(0, { $0 + ($1 == 10 ? 1 : 0) }) > n { break }
        }
        // Only complete lines; what follows the last newline is picked up by follow.
        guard let lastNL = data.lastIndex(of: 10) else { return start }
        let complete = data[..<lastNL]
        var lines = complete.split(separator: 10, omittingEmptySubsequences: false)
        if start > 0 && !lines.isEmpty { lines.removeFirst() }  // partial first line
        var out: [UInt8] = []
        for l in lines.suffix(n) { out += event(l) }
        if n > 0 { ex.write(out) }
        return start + Int64(lastNL) + 1
    }

    static func event(_ line: ArraySlice<UInt8>) -> [UInt8] {
        var l = line
        if l.last == 13 { l = l.dropLast() }
        return Array("data: ".utf8) + JSON.serialize(.string(String(decoding: l, as: UTF8.self))) + [10, 10]
    }

    static func readAt(_ fd: Int32, _ off: Int64, _ count: Int) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, count - got, off_t(off + Int64(got))) }
            if n <= 0 { break }
            got += n
        }
        buf.removeLast(count - got)
        return buf
    }
}
