import Digest
import Foundation
import Synchronization
import Testing
@testable import OCI

@Suite struct BlobStoreTests {
    @Test func putVerifiesAndStoresOnce() throws {
        let dir = TempDir("blobs")
        let store = try BlobStore(root: dir.path)
        let bytes = Array("hello blob".utf8)
        let digest = "sha256:" + Digests.sha256Hex(bytes)
        try store.put(bytes, digest: digest)
        #expect(store.contains(digest))
        #expect(try store.read(digest) == bytes)
        #expect(try store.path(for: digest) == dir.path + "/blobs/sha256/" + digest.dropFirst(7))
        // Present: produce is not called again.
        let ran = try store.ensure(digest) { () throws(OCIError) in Issue.record("produced twice") }
        #expect(!ran)
    }

    @Test func mismatchLeavesNothing() throws {
        let dir = TempDir("blobs")
        let store = try BlobStore(root: dir.path)
        let wrong = "sha256:" + Digests.sha256Hex(Array("other".utf8))
        do {
            try store.put(Array("hello".utf8), digest: wrong)
            Issue.record("mismatch accepted")
        } catch {
            guard case .digestMismatch(let e, let a) = error else { Issue.record("wrong error \(error)"); return }
            #expect(e == wrong)
            #expect(a == "sha256:" + Digests.sha256Hex(Array("hello".utf8)))
        }
        #expect(!store.contains(wrong))
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.blobDir).isEmpty)
    }

    @Test func refusesPathLikeDigests() throws {
        let store = try BlobStore(root: TempDir("blobs").path)
        #expect(throws: OCIError.self) { _ = try store.path(for: "sha256:../../etc/passwd") }
        #expect(throws: OCIError.self) { _ = try store.path(for: "md5:abc") }
    }

    @Test func concurrentEnsureProducesOnce() throws {
        let dir = TempDir("blobs")
        let store = try BlobStore(root: dir.path)
        let bytes = Array(repeating: UInt8(7), count: 1 << 20)
        let digest = "sha256:" + Digests.sha256Hex(bytes)
        let produced = Mutex(0)
        Parallel.run(count: 8, width: 8) { _ in
            _ = try? store.ensure(digest) { () throws(OCIError) in
                produced.withLock { $0 += 1 }
                Thread.sleep(forTimeInterval: 0.05)
                let t = try store.makeTemp(for: digest)
                _ = bytes.withUnsafeBytes { write(t.fd, $0.baseAddress, $0.count) }
                t.hasher.update(bytes)
                try store.commit(t, digest: digest, size: Int64(bytes.count))
            }
        }
        #expect(produced.withLock { $0 } == 1)
        #expect(store.contains(digest))
    }
}
