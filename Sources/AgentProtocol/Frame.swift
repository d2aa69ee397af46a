/// The wire format between the Provisioner (host) and `hypeman-agent` (guest), over one byte
/// stream per link (a virtio-serial port under QEMU, a hybrid-vsock connection under Cloud
/// Hypervisor, a Unix socket in tests). Every message is one frame:
///
///     u32 BE payload length | u8 kind | u32 BE stream | payload
///
/// `stream` ties frames to one exec session or one request (0 = the link itself). The host
/// picks stream ids; the agent answers on the same id. Payloads are encoded by `WireWriter`.
public struct Frame: Sendable, Equatable {
    public var kind: FrameKind
    public var stream: UInt32
    public var payload: [UInt8]

    public init(_ kind: FrameKind, stream: UInt32, payload: [UInt8] = []) {
        self.kind = kind; self.stream = stream; self.payload = payload
    }

    public static let headerSize = 9
    /// Largest payload either side sends or accepts (the decoder fails the link above it).
    public static let maxPayload = 1 << 20

    /// The frame's bytes, header included.
    public func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Frame.headerSize + payload.count)
        appendBE32(&out, UInt32(payload.count))
        out.append(kind.rawValue)
        appendBE32(&out, stream)
        out += payload
        return out
    }
}

/// What a frame carries. Direction: H = host → agent, A = agent → host.
public enum FrameKind: UInt8, Sendable {
    /// H: `HelloRequest` once per new link; A: `HelloReply`. A hello resets the link: the agent
    /// kills the sessions a previous host connection left behind on it.
    case hello = 1
    /// H: empty; A answers `pong` with the same payload.
    case ping = 2
    case pong = 3
    /// H: `ExecStart` opens session `stream`.
    case execStart = 10
    /// H: raw bytes for the session's stdin.
    case stdin = 11
    /// H: close the session's stdin (EOF).
    case stdinClose = 12
    /// H: `Resize` (tty sessions).
    case resize = 13
    /// H: `SignalRequest` to the session's process group.
    case signal = 14
    /// H: stop reading the session's output (its reader is behind); the process then blocks on
    /// a full pipe. Empty payload. Per session, so one slow reader never stalls the others.
    case pauseOutput = 15
    /// H: read the session's output again. Empty payload.
    case resumeOutput = 16
    /// A: `Output` (fd 1 or 2, bytes).
    case output = 20
    /// A: `ExitStatus`; the last frame of a session.
    case exit = 22
    /// H: `MountRequest`; A answers `result` on the same stream.
    case mount = 30
    /// H: `UnmountRequest`; A answers `result`.
    case unmount = 31
    /// A: `RequestResult`.
    case result = 32
}

/// Incremental frame parser: feed bytes as they arrive, take whole frames out.
public struct FrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0

    public init() {}

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case tooLarge(Int)
        case unknownKind(UInt8)
        public var description: String {
            switch self {
            case .tooLarge(let n): return "agent frame of \(n) bytes exceeds the \(Frame.maxPayload)-byte limit"
            case .unknownKind(let k): return "unknown agent frame kind \(k)"
            }
        }
    }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        buffer.append(contentsOf: bytes)
    }

    public mutating func feed(_ bytes: [UInt8]) {
        buffer += bytes
    }

    /// Drops whatever partial frame is buffered (the link was reset).
    public mutating func reset() { buffer.removeAll(keepingCapacity: true); start = 0 }

    /// The next whole frame, nil when more bytes are needed. A too-large length or an unknown
    /// kind is a broken link: the caller drops it.
    public mutating func next() throws(DecodeError) -> Frame? {
        let available = buffer.count - start
        guard available >= Frame.headerSize else { compact(); return nil }
        let length = Int(readBE32(buffer, start))
        guard length <= Frame.maxPayload else { throw .tooLarge(length) }
        guard available >= Frame.headerSize + length else { compact(); return nil }
        guard let kind = FrameKind(rawValue: buffer[start + 4]) else { throw .unknownKind(buffer[start + 4]) }
        let stream = readBE32(buffer, start + 5)
        let body = Array(buffer[(start + Frame.headerSize)..<(start + Frame.headerSize + length)])
        start += Frame.headerSize + length
        if start == buffer.count { buffer.removeAll(keepingCapacity: true); start = 0 }
        return Frame(kind, stream: stream, payload: body)
    }

    private mutating func compact() {
        if start > 0 { buffer.removeFirst(start); start = 0 }
    }
}

@inline(__always) func appendBE32(_ out: inout [UInt8], _ v: UInt32) {
    out.append(UInt8(truncatingIfNeeded: v >> 24)); out.append(UInt8(truncatingIfNeeded: v >> 16))
    out.append(UInt8(truncatingIfNeeded: v >> 8)); out.append(UInt8(truncatingIfNeeded: v))
}

@inline(__always) func readBE32(_ b: [UInt8], _ i: Int) -> UInt32 {
    UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
}
