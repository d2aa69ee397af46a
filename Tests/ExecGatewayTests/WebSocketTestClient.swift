import Foundation
import Glibc

/// A minimal blocking WebSocket client over a Unix socket for the tests: raw HTTP requests,
/// masked frames (or deliberately broken ones), and frame reads with a receive timeout so no
/// test can hang.
final class WebSocketTestClient {
    struct Frame: Equatable {
        var fin: Bool
        var opcode: UInt8
        var payload: [UInt8]
        var text: String { String(decoding: payload, as: UTF8.self) }
        /// The close code of a close frame.
        var closeCode: UInt16? { opcode == 8 && payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil }
    }

    struct HTTPReply {
        var status: Int
        var headers: [String: String]
        var body: [UInt8]
        /// The body as a JSON object (nil if it is not one).
        var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] }
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    static let rfcKey = "dGhlIHNhbXBsZSBub25jZQ=="

    let fd: Int32
    private var buffer: [UInt8] = []
    private(set) var sawEOF = false

    init(path: String, timeoutSeconds: Int = 5) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(errno)") }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        // No close here: every stored property is set, so deinit runs (and closes fd) on throw.
        guard rc == 0 else { throw Failure(description: "connect \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Closes the socket without a closing handshake (a client that just goes away).
    func abort() { shutdown(fd, Int32(SHUT_RDWR)) }

    // MARK: HTTP

    static func upgradeRequest(target: String, method: String = "GET", key: String = rfcKey,
                               replacing: [String: String?] = [:]) -> [UInt8] {
        var headers: [(String, String)] = [("Host", "localhost"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                           ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13"),
                                           ("X-Auth-Subject", "tester")]
        for (name, value) in replacing {
            headers.removeAll { $0.0 == name }
            if let value { headers.append((name, value)) }
        }
        var text = "\(method) \(target) HTTP/1.1\r\n"
        for (k, v) in headers { text += "\(k): \(v)\r\n" }
        return Array((text + "\r\n").utf8)
    }

    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    /// Reads the response head (and a body of `Content-Length` bytes).
    func readHTTPReply() throws -> HTTPReply {
        var headEnd: Int?
        while headEnd == nil {
            if let r = findCRLFCRLF() { headEnd = r; break }
            guard fill() else { throw Failure(description: "no HTTP response (got \(String(decoding: buffer, as: UTF8.self)))") }
        }
        let head = String(decoding: buffer[..<headEnd!], as: UTF8.self)
        buffer.removeFirst(headEnd! + 4)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw Failure(description: "bad status line in \(head)") }
        var headers: [String: String] = [:]
        for l in lines {
            guard let c = l.firstIndex(of: ":") else { continue }
            headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        while buffer.count < length { guard fill() else { throw Failure(description: "short body") } }
        let body = Array(buffer[..<length])
        buffer.removeFirst(length)
        return HTTPReply(status: status, headers: headers, body: body)
    }

    /// Sends an upgrade request for `ref` and expects the 101.
    func upgrade(_ ref: String = "box") throws {
        send(Self.upgradeRequest(target: "/instances/\(ref)/exec"))
        let reply = try readHTTPReply()
        guard reply.status == 101 else {
            throw Failure(description: "expected 101, got \(reply.status) \(String(decoding: reply.body, as: UTF8.self))")
        }
    }

    /// Connects, upgrades, and sends `request` (JSON text) as the first message.
    static func session(_ path: String, ref: String = "box", request: String) throws -> WebSocketTestClient {
        let c = try WebSocketTestClient(path: path)
        try c.upgrade(ref)
        c.sendText(request)
        return c
    }

    // MARK: Frames

    /// Sends a frame; `masked: false`, `rsv` and odd opcodes exist to break the protocol on purpose.
    @discardableResult
    func sendFrame(opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv: UInt8 = 0) -> Bool {
        var out: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            out.append(maskBit | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            out += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            out.append(maskBit | 127)
            for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: payload.count >> s)) }
        }
        if masked {
            let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
            out += mask
            out += payload.enumerated().map { $0.element ^ mask[$0.offset & 3] }
        } else {
            out += payload
        }
        return send(out)
    }

    @discardableResult func sendText(_ s: String) -> Bool { sendFrame(opcode: 1, Array(s.utf8)) }
    @discardableResult func sendBinary(_ b: [UInt8]) -> Bool { sendFrame(opcode: 2, b) }
    @discardableResult func sendClose(_ code: UInt16 = 1000) -> Bool { sendFrame(opcode: 8, [UInt8(code >> 8), UInt8(code & 0xFF)]) }

    /// The next frame, nil on EOF or timeout. Server frames must be unmasked.
    func readFrame() throws -> Frame? {
        while true {
            if buffer.count >= 2 {
                let b0 = buffer[0], b1 = buffer[1]
                guard b1 & 0x80 == 0 else { throw Failure(description: "server frame is masked") }
                var len = Int(b1 & 0x7F), header = 2
                if len == 126 {
                    if buffer.count >= 4 { len = Int(buffer[2]) << 8 | Int(buffer[3]); header = 4 } else { header = -1 }
                } else if len == 127 {
                    if buffer.count >= 10 {
                        len = 0
                        for i in 0..<8 { len = len << 8 | Int(buffer[2 + i]) }
                        header = 10
                    } else { header = -1 }
                }
                if header > 0 && buffer.count >= header + len {
                    let f = Frame(fin: b0 & 0x80 != 0, opcode: b0 & 0x0F, payload: Array(buffer[header..<(header + len)]))
                    buffer.removeFirst(header + len)
                    return f
                }
            }
            guard fill() else { return nil }
        }
    }

    /// Frames until (and including) the server's close frame, answering it with a close; stops
    /// early on EOF or timeout.
    func readUntilClose() throws -> [Frame] {
        var frames: [Frame] = []
        while let f = try readFrame() {
            frames.append(f)
            if f.opcode == 8 {
                sendFrame(opcode: 8, f.payload)
                break
            }
        }
        return frames
    }

    /// Whether the server closed the connection (EOF) within the receive timeout, with no
    /// further bytes.
    func readsEOF() -> Bool {
        while buffer.isEmpty { if !fill() { return sawEOF } }
        return false
    }

    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &chunk, chunk.count, 0)
        if n > 0 { buffer += chunk[0..<n]; return true }
        if n == 0 || errno == ECONNRESET { sawEOF = true }
        return false
    }

    private func findCRLFCRLF() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
            return i
        }
        return nil
    }
}
