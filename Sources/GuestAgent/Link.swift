import AgentProtocol
import Glibc

/// One byte stream to the host: an accepted vsock/Unix connection, or a virtio-serial port.
/// Holds the frame decoder, the unsent output and the sessions started over it.
final class Link {
    /// While more than this many bytes wait for the host, the link's sessions are not read.
    static let backpressureLimit = 1 << 20

    let fd: Int32
    /// For logs, e.g. "unix #3" or "virtio-serial vport1p1".
    let name: String
    /// A virtio-serial port: stays open across host disconnects (no host = POLLHUP).
    let isPort: Bool
    /// A host is on the other end (always true for an accepted connection while open).
    var connected: Bool
    var closed = false
    var decoder = FrameDecoder()
    var outgoing = ByteQueue()
    var sessions: [UInt32: Session] = [:]

    init(fd: Int32, name: String, isPort: Bool, connected: Bool) {
        self.fd = fd; self.name = name; self.isPort = isPort; self.connected = connected
    }

    var isBackpressured: Bool { outgoing.count > Link.backpressureLimit }

    /// Queues a frame (dropped while no host is connected).
    func send(_ kind: FrameKind, stream: UInt32, payload: [UInt8]) {
        guard connected && !closed else { return }
        outgoing.append(Frame(kind, stream: stream, payload: payload).encoded())
    }

    /// Queues an `output` frame straight from a read buffer (no intermediate arrays).
    func sendOutput(stream: UInt32, fd: UInt8, bytes: UnsafeRawBufferPointer) {
        guard connected && !closed else { return }
        let length = UInt32(bytes.count + 1)
        let header: [UInt8] = [
            UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
            UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length),
            FrameKind.output.rawValue,
            UInt8(truncatingIfNeeded: stream >> 24), UInt8(truncatingIfNeeded: stream >> 16),
            UInt8(truncatingIfNeeded: stream >> 8), UInt8(truncatingIfNeeded: stream),
            fd,
        ]
        outgoing.append(header)
        outgoing.append(bytes)
    }
}
