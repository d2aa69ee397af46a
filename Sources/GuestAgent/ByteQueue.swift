import Glibc

/// Bytes waiting for a non-blocking descriptor (a link's output, a session's stdin).
struct ByteQueue {
    private var storage: [UInt8] = []
    private var head = 0

    var count: Int { storage.count - head }
    var isEmpty: Bool { head == storage.count }

    mutating func append(_ bytes: [UInt8]) { storage += bytes }
    mutating func append(_ bytes: UnsafeRawBufferPointer) { storage.append(contentsOf: bytes) }

    mutating func removeAll() { storage.removeAll(keepingCapacity: false); head = 0 }

    /// Writes as much as `fd` takes now. Returns the errno of a hard failure (EAGAIN is not one).
    mutating func flush(to fd: Int32) -> Int32? {
        var failure: Int32?
        while !isEmpty {
            let written = storage.withUnsafeBytes { raw in write(fd, raw.baseAddress! + head, raw.count - head) }
            if written > 0 { head += written; continue }
            if written < 0 && errno == EINTR { continue }
            if written < 0 && errno != EAGAIN { failure = errno }
            break
        }
        if isEmpty {
            storage.removeAll(keepingCapacity: storage.count <= 1 << 20); head = 0
        } else if head >= 1 << 20 {
            storage.removeFirst(head); head = 0
        }
        return failure
    }
}
