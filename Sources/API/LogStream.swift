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
    static let sources = GuestLogSource.allCases.map(\.rawValue)
    static let maxTail = 100_000
    /// The longest event: guest output without a newline is sent in pieces of this size.
    static let maxLineBytes = 64 * 1024
    /// The most log bytes a tail reads (the newest lines are kept).
    static let maxTailBytes: Int64 = 4 << 20

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
        guard let source = GuestLogSource(rawValue: q["source"] ?? "app") else {
            throw queryError("source", "value is not one of the allowed values [app vmm hypeman]")
        }
        let inst = try h.store.resolveInstance(key).get()
        let dir = GuestLogFiles.directory(instanceDir: "\(h.config.dataDir)/guests/\(inst.id)")
        let path = GuestLogFiles.live(source, in: dir)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw APIError(.logNotFound, "requested log file does not exist yet") }
        var follower = Follower(source: source, dir: dir, fd: fd)
        defer { follower.close() }

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
        // The tail reads the rotated files (oldest first) and the live one as one sequence.
        var segments = LogSegments.open(source, in: dir, live: fd)
        // Rotation is noticed against the `.1` the tail read, not an older or newer one.
        follower.rotatedInode = segments.newestRotatedInode
        let t = tailLines(&segments, tail, maxBytes: maxTailBytes, maxLine: maxLineBytes)
        var out: [UInt8] = []
        for l in t.lines { out += event(l) }
        // Follow goes on after the last complete line sent: in the live file, or (when that
        // line ended in a rotated file) with the rest of the rotated data as a pending prefix.
        let liveStart = segments.total - segments.sizes.last!
        if t.end >= liveStart {
            follower.offset = t.end - liveStart
        } else if follow {
            follower.offset = 0
            follower.splitter.feed(segments.read(at: t.end, count: Int(liveStart - t.end))) { out += event($0) }
        }
        segments.closeRotated()
        if !out.isEmpty { ex.write(out) }
        guard follow, ex.flush() else { return }
        var lastWrite = Timestamp.monotonic()
        while true {
            var out: [UInt8] = []
            switch follower.step(emit: { out += event($0) }) {
            case .gone: return
            case .idle:
                if Timestamp.monotonic() - lastWrite > 15 {
                    guard ex.write(Array(": keepalive\n\n".utf8)), ex.flush() else { return }
                    lastWrite = Timestamp.monotonic()
                }
                usleep(100_000)
            case .progressed:
                if !out.isEmpty {
                    guard ex.write(out), ex.flush() else { return }
                    lastWrite = Timestamp.monotonic()
                }
            }
        }
    }

    /// The last `n` lines of `segments` (complete lines only; lines longer than `maxLine` count
    /// as several pieces, as a follower would send them), reading backwards in blocks and
    /// looking at each byte once, at most `maxBytes` of log (the newest). `end` is the offset
    /// just after the last complete line.
    static func tailLines(_ segments: inout LogSegments, _ n: Int, maxBytes: Int64, maxLine: Int)
        -> (lines: [ArraySlice<UInt8>], end: Int64) {
        let size = segments.total
        var start = size
        var blocks: [[UInt8]] = []
        var newlines = 0
        var lastNL: Int64? = nil
        let block: Int64 = 64 * 1024
        while start > 0 && size - start < maxBytes && (newlines <= n || lastNL == nil) {
            let step = min(start, block, maxBytes - (size - start))
            start -= step
            let b = segments.read(at: start, count: Int(step))
            for i in stride(from: b.count - 1, through: 0, by: -1) where b[i] == 10 {
                newlines += 1
                if lastNL == nil { lastNL = start + Int64(i) }
            }
            blocks.append(b)
        }
        guard n > 0, let lastNL else { return ([], lastNL.map { $0 + 1 } ?? start) }
        var data: [UInt8] = []
        data.reserveCapacity(Int(lastNL - start))
        for b in blocks.reversed() { data += b }
        let complete = data[..<Int(lastNL - start)]
        // Newest first, stop at n pieces.
        var pieces: [ArraySlice<UInt8>] = []
        var lineEnd = complete.endIndex
        var i = complete.endIndex
        while pieces.count < n {
            let atStart = i == complete.startIndex
            if atStart || complete[i - 1] == 10 {
                var line = complete[i..<lineEnd]
                if line.last == 13 { line = line.dropLast() }
                var chunks: [ArraySlice<UInt8>] = []
                var p = line.startIndex
                while p < line.endIndex || chunks.isEmpty {
                    let q = min(p + maxLine, line.endIndex)
                    chunks.append(line[p..<q])
                    p = q
                }
                for c in chunks.reversed() where pieces.count < n { pieces.append(c) }
                if atStart { break }
                lineEnd = i - 1
            }
            i -= 1
        }
        return (pieces.reversed(), lastNL + 1)
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

    static func inode(_ path: String) -> UInt64? {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_ino) : nil
    }
}

/// One log source read as a single byte sequence: the rotated files, oldest first, then the
/// live file. Counts the bytes it reads.
struct LogSegments {
    var fds: [Int32]
    var sizes: [Int64]
    var bytesRead: Int64 = 0
    var total: Int64 { sizes.reduce(0, +) }

    /// The rotated files of `source` that exist (`.1`, `.2`, … until one is missing) and `live`.
    static func open(_ source: GuestLogSource, in dir: String, live: Int32) -> LogSegments {
        var fds: [Int32] = []
        var k = 1
        while k <= GuestLogFiles.maxRotated {
            let fd = Glibc.open(GuestLogFiles.rotated(source, k, in: dir), O_RDONLY | O_CLOEXEC)
            if fd < 0 { break }
            fds.insert(fd, at: 0)
            k += 1
        }
        fds.append(live)
        return LogSegments(fds: fds)
    }

    init(fds: [Int32]) {
        self.fds = fds
        sizes = fds.map { fd in
            var st = stat()
            return fstat(fd, &st) == 0 ? Int64(st.st_size) : 0
        }
    }

    /// `count` bytes from the virtual offset `at` (fewer at the end).
    mutating func read(at: Int64, count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var off = at
        var base: Int64 = 0
        for (i, fd) in fds.enumerated() {
            let end = base + sizes[i]
            if off < end && out.count < count {
                let want = min(Int64(count - out.count), end - off)
                let got = LogStream.readAt(fd, off - base, Int(want))
                out += got
                off += Int64(got.count)
                if Int64(got.count) < want { break }
            }
            base = end
        }
        bytesRead += Int64(out.count)
        return out
    }

    /// The inode of `.1` as opened (nil when there is no rotated file).
    var newestRotatedInode: UInt64? {
        guard fds.count >= 2 else { return nil }
        var st = stat()
        return fstat(fds[fds.count - 2], &st) == 0 ? UInt64(st.st_ino) : nil
    }

    /// Closes the rotated files (the live one belongs to the caller).
    mutating func closeRotated() {
        for fd in fds.dropLast() { Glibc.close(fd) }
        fds = Array(fds.suffix(1))
        sizes = Array(sizes.suffix(1))
    }
}

/// Splits a byte stream into lines, looking at each byte once. Output without a newline is
/// held up to `maxLine` bytes, then sent as a piece (cut before an incomplete UTF-8 sequence);
/// the rest of the line follows as the next piece.
struct LineSplitter {
    let maxLine: Int
    private(set) var pending: [UInt8] = []
    /// Bytes looked at so far.
    private(set) var scanned = 0
    /// The current line was already sent in part (a newline right after a cut ends it silently).
    private var cut = false

    init(maxLine: Int) { self.maxLine = maxLine; pending.reserveCapacity(maxLine) }

    mutating func feed(_ chunk: [UInt8], _ emit: (ArraySlice<UInt8>) -> Void) {
        scanned += chunk.count
        var start = 0
        var i = 0
        while i < chunk.count {
            if chunk[i] == 10 {
                if pending.isEmpty { if !(cut && start == i) { emit(chunk[start..<i]) } } else {
                    pending += chunk[start..<i]
                    emit(pending[...])
                    pending.removeAll(keepingCapacity: true)
                }
                start = i + 1
                cut = false
            } else if pending.count + (i + 1 - start) >= maxLine {
                pending += chunk[start...i]
                start = i + 1
                let at = Self.utf8Cut(pending)
                emit(pending[..<at])
                pending.removeFirst(at)
                cut = true
            }
            i += 1
        }
        pending += chunk[start...]
    }

    /// Where to cut `bytes` so no UTF-8 sequence is split: before a trailing incomplete one.
    static func utf8Cut(_ bytes: [UInt8]) -> Int {
        var j = bytes.count - 1
        let floor = max(0, bytes.count - 4)
        while j >= floor {
            let b = bytes[j]
            if b & 0xC0 != 0x80 {   // a lead byte (or ASCII)
                let len = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
                return j + len > bytes.count && j > 0 ? j : bytes.count
            }
            j -= 1
        }
        return bytes.count
    }
}

/// Follows one log source across rotation: reads the live file from `offset`; when the live
/// file was renamed away (a new inode at the path) it drains the old one first; when it was
/// copied to `.1` and truncated (a new `.1`, the live file shorter) it first sends what `.1`
/// holds past `offset`, then goes on from the start of the live file.
struct Follower {
    let source: GuestLogSource
    let dir: String
    var fd: Int32
    var offset: Int64 = 0
    var splitter = LineSplitter(maxLine: LogStream.maxLineBytes)
    var rotatedInode: UInt64?

    enum Step { case progressed, idle, gone }

    init(source: GuestLogSource, dir: String, fd: Int32) {
        self.source = source
        self.dir = dir
        self.fd = fd
        rotatedInode = LogStream.inode(GuestLogFiles.rotated(source, 1, in: dir))
    }

    var livePath: String { GuestLogFiles.live(source, in: dir) }

    mutating func close() { if fd >= 0 { Glibc.close(fd); fd = -1 } }

    /// Reads `[from, to)` of `fd` (in 1 MiB reads) into the splitter.
    mutating func drain(_ fd: Int32, from: Int64, to: Int64, emit: (ArraySlice<UInt8>) -> Void) {
        var off = from
        while off < to {
            let chunk = LogStream.readAt(fd, off, Int(min(to - off, 1 << 20)))
            if chunk.isEmpty { break }
            off += Int64(chunk.count)
            splitter.feed(chunk, emit)
        }
    }

    /// One look at the files: sends what is new (`progressed`), nothing new (`idle`), or the log
    /// is gone with its instance (`gone`).
    mutating func step(emit: (ArraySlice<UInt8>) -> Void) -> Step {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return .gone }
        var pst = stat()
        // Missing: deleted with the instance, or renamed away and not yet written again (then
        // the old file is read on below).
        let present = stat(livePath, &pst) == 0
        if !present && st.st_nlink == 0 { return .gone }
        if present && pst.st_ino != st.st_ino {
            // Renamed away: the rest of the old file, then the new one from its start.
            drain(fd, from: offset, to: Int64(st.st_size), emit: emit)
            let nfd = Glibc.open(livePath, O_RDONLY | O_CLOEXEC)
            guard nfd >= 0 else { return .idle }
            Glibc.close(fd)
            fd = nfd
            offset = 0
            rotatedInode = LogStream.inode(GuestLogFiles.rotated(source, 1, in: dir))
            return .progressed
        }
        let r1 = GuestLogFiles.rotated(source, 1, in: dir)
        let ino1 = present ? LogStream.inode(r1) : rotatedInode
        if ino1 != rotatedInode, ino1 != nil {
            // Copied to `.1`; the truncation follows the rename at once.
            var size = Int64(st.st_size)
            for _ in 0..<20 where size >= offset && offset > 0 {
                usleep(1000)
                if fstat(fd, &st) == 0 { size = Int64(st.st_size) }
            }
            let rfd = Glibc.open(r1, O_RDONLY | O_CLOEXEC)
            if rfd >= 0 {
                var rst = stat()
                if fstat(rfd, &rst) == 0 { drain(rfd, from: offset, to: Int64(rst.st_size), emit: emit) }
                Glibc.close(rfd)
            }
            rotatedInode = ino1
            offset = 0
            return .progressed
        }
        let size = Int64(st.st_size)
        if size < offset { offset = 0 }   // truncated without a rotated copy (LOG_FILES=1)
        guard size > offset else { return .idle }
        let chunk = LogStream.readAt(fd, offset, Int(min(size - offset, 1 << 20)))
        offset += Int64(chunk.count)
        splitter.feed(chunk, emit)
        return .progressed
    }
}
