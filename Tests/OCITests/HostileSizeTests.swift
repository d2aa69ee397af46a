import Foundation
import Model
import Testing
@testable import OCI

/// Sizes a registry or an archive declares are untrusted: bounded before use and summed checked,
/// so a hostile value is an error and never a trap.
@Suite struct DescriptorSizeTests {
    func manifest(_ layers: [Int64], config: Int64 = 100) -> ImageManifest {
        let json = """
        {"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\(String(repeating: "c", count: 64))","size":\(config)},
         "layers":[\(layers.enumerated().map { i, s in
            "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:\(String(repeating: String(i % 10), count: 64))\",\"size\":\(s)}"
         }.joined(separator: ","))]}
        """
        return try! JSONDecoder().decode(ImageManifest.self, from: Data(json.utf8))
    }

    @Test func int64MaxLayerIsOverTheLimit() {
        #expect(throws: OCIError.self) { _ = try ImagePuller.checkedLayerTotal(manifest([Int64.max]), limits: PullLimits()) }
        do { _ = try ImagePuller.checkedLayerTotal(manifest([Int64.max]), limits: PullLimits()); Issue.record("accepted") } catch {
            guard case .limitExceeded = error else { Issue.record("wrong error \(error)"); return }
        }
    }

    @Test func negativeSizeIsRefused() {
        do { _ = try ImagePuller.checkedLayerTotal(manifest([10, -1]), limits: PullLimits()); Issue.record("accepted") } catch {
            guard case .invalidResponse(let m) = error else { Issue.record("wrong error \(error)"); return }
            #expect(m.contains("negative"))
        }
        do { _ = try ImagePuller.checkedLayerTotal(manifest([10], config: -5), limits: PullLimits()); Issue.record("accepted") } catch {
            guard case .invalidResponse = error else { Issue.record("wrong error \(error)"); return }
        }
    }

    @Test func layersSummingPastInt64MaxAreRefusedEvenWithoutLimits() {
        // Each layer alone fits any bound; their sum overflows Int64.
        let open = PullLimits(maxBlobBytes: Int64.max, maxImageBytes: Int64.max, maxConfigBytes: Int64.max)
        let m = manifest([Int64.max / 2 + 1, Int64.max / 2 + 1])
        do { _ = try ImagePuller.checkedLayerTotal(m, limits: open); Issue.record("accepted") } catch {
            guard case .limitExceeded = error else { Issue.record("wrong error \(error)"); return }
        }
        #expect(ByteMath.sum([Int64.max, 1]) == nil)
        #expect(ByteMath.sum([Int64.max - 1, 1]) == Int64.max)
        #expect(ByteMath.multiply(Int64.max / 2, 3) == nil)
    }

    @Test func sumOverTheImageLimitAndHugeConfigAreRefused() throws {
        let limits = PullLimits(maxBlobBytes: 1000, maxImageBytes: 1500, maxConfigBytes: 50)
        #expect(try ImagePuller.checkedLayerTotal(manifest([700, 800], config: 10), limits: limits) == 1500)
        #expect(throws: OCIError.self) { _ = try ImagePuller.checkedLayerTotal(manifest([700, 801], config: 10), limits: limits) }
        #expect(throws: OCIError.self) { _ = try ImagePuller.checkedLayerTotal(manifest([1001], config: 10), limits: limits) }
        #expect(throws: OCIError.self) { _ = try ImagePuller.checkedLayerTotal(manifest([1], config: 51), limits: limits) }
    }

    @Test func sizesThatDoNotFitInt64AreADecodingErrorNotATrap() {
        let json = """
        {"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:0","size":1},
         "layers":[{"mediaType":"x","digest":"sha256:1","size":92233720368547758070}]}
        """
        #expect(throws: (any Error).self) { _ = try JSONDecoder().decode(ImageManifest.self, from: Data(json.utf8)) }
    }
}

/// A tar written byte by byte: headers with sizes no honest tool writes.
enum HandTar {
    static func header(_ name: String, size: Int64, type: UInt8 = UInt8(ascii: "0")) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ off: Int, _ s: String) { for (i, b) in s.utf8.enumerated() { h[off + i] = b } }
        put(0, name)
        put(100, "0000644\0"); put(108, "0000000\0"); put(116, "0000000\0")
        if size >= 0 && size < 0o77777777777 {
            put(124, String(size, radix: 8).leftPad(11) + "\0")
        } else {
            // Base-256: the top bit of the first byte set, then the value big-endian (two's
            // complement, so a negative size fills with 0xff).
            h[124] = size < 0 ? 0xff : 0x80
            for i in 0..<11 {
                let shift = 8 * (10 - i)
                h[125 + i] = shift >= 64 ? (size < 0 ? 0xff : 0) : UInt8(truncatingIfNeeded: size >> Int64(shift))
            }
        }
        put(136, "00000000000\0")
        for i in 148..<156 { h[i] = 32 }
        h[156] = type
        put(257, "ustar\u{0}00")
        let sum = h.reduce(0) { $0 + Int($1) }
        put(148, String(sum, radix: 8).leftPad(6) + "\0 ")
        return h
    }

    /// `ok.txt` with a few bytes, then `huge.bin` claiming `size` bytes with nothing behind it.
    static func lyingArchive(size: Int64) -> [UInt8] {
        let data = Array("hello\n".utf8)
        var t = header("ok.txt", size: Int64(data.count)) + data + [UInt8](repeating: 0, count: 512 - data.count)
        t += header("huge.bin", size: size)
        t += [UInt8](repeating: 0, count: 1024)
        return t
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

@Suite struct LyingTarHeaderTests {
    func unpack(_ bytes: [UInt8], limits: UnpackLimits = UnpackLimits()) throws(OCIError) -> UnpackStats {
        let dir = TempDir("lying")
        let p = dir.sub("layer.tar")
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return try LayerUnpacker.unpack([LayerSource(path: p, compression: .none)], into: dir.sub("root"), limits: limits)
    }

    @Test func headerSizeNearInt64MaxIsALimitErrorNotATrap() {
        // Before: `stats.bytes + size` overflowed (6 + 2^63-2) and trapped.
        for size in [Int64.max - 1, Int64.max - 6, Int64.max / 2 + 7] {
            do { _ = try unpack(HandTar.lyingArchive(size: size)); Issue.record("accepted \(size)") } catch {
                guard case .limitExceeded(let m) = error else { Issue.record("wrong error \(error)"); continue }
                #expect(!m.contains("/tmp"))
            }
        }
        // The same with every limit open: the sum itself must be checked.
        let open = UnpackLimits(maxBytes: Int64.max)
        do { _ = try unpack(HandTar.lyingArchive(size: Int64.max - 1), limits: open); Issue.record("accepted") } catch {
            switch error {
            case .limitExceeded, .unsafeLayer: break
            default: Issue.record("wrong error \(error)")
            }
        }
    }

    @Test func negativeHeaderSizeIsRefused() {
        #expect(throws: OCIError.self) { _ = try unpack(HandTar.lyingArchive(size: -4096)) }
    }

    @Test func declaredSizesCountAgainstTheLimitBeforeAnyWrite() throws {
        // 6 + 100 declared bytes against a limit of 100: refused at the header, not after the data.
        let bomb = HandTar.lyingArchive(size: 100)
        #expect(throws: OCIError.self) { _ = try unpack(bomb, limits: UnpackLimits(maxBytes: 100)) }
        let honest = HandTar.header("a", size: 3) + Array("abc".utf8) + [UInt8](repeating: 0, count: 509 + 1024)
        let stats = try unpack(honest, limits: UnpackLimits(maxBytes: 3))
        #expect(stats.bytes == 3)
    }

    @Test func errorsNameTheLayerNotTheHostPath() {
        let garbage = [UInt8](repeating: 0x41, count: 2048)
        do { _ = try unpack(garbage); Issue.record("accepted") } catch {
            #expect(!error.description.contains("/tmp"), "\(error)")
        }
    }
}

/// The same through a pull from tests/fixtures/fake-registry.py's hostile repositories.
@Suite(.enabled(if: pythonAvailable, "needs /usr/bin/python3 for the fake registry"))
struct HostileRegistryTests {
    func client(_ fake: FakeRegistry) -> RegistryClient {
        RegistryClient(options: RegistryOptions(insecureRegistries: [fake.host],
                                                retry: RetryPolicy(maxAttempts: 1, baseDelay: 0.01, maxDelay: 0.05)))
    }

    @Test func absurdManifestSizesFailBeforeAnyBlobIsFetched() throws {
        let fake = try FakeRegistry()
        let dir = TempDir("hostile")
        let store = try BlobStore(root: dir.path)
        for (repo, negative) in [("hostile/huge", false), ("hostile/negative", true), ("hostile/overflow", false)] {
            let ref = try ImageReference.parse("\(fake.host)/\(repo):latest")
            do throws(OCIError) {
                _ = try ImagePuller(registry: client(fake), store: store).pull(ref)
                Issue.record("\(repo) accepted")
            } catch {
                switch error {
                case .limitExceeded where !negative, .invalidResponse where negative: break
                default: Issue.record("\(repo): wrong error \(error)")
                }
            }
        }
        let blobRequests = try fake.stats().keys.filter { $0.contains("/hostile/") && $0.contains("/blobs/") }
        #expect(blobRequests.isEmpty, "\(blobRequests)")
        #expect(store.allDigests().count == 3)   // only the three manifests were stored
    }

    @Test func lyingLayerArchiveFailsTheUnpackNotTheProcess() throws {
        let fake = try FakeRegistry()
        let dir = TempDir("hostile")
        let store = try BlobStore(root: dir.sub("cache"))
        let pulled = try ImagePuller(registry: client(fake), store: store).pull(try ImageReference.parse("\(fake.host)/hostile/tarbomb:latest"))
        let sources = try pulled.layerSources(in: store)
        do throws(OCIError) {
            _ = try LayerUnpacker.unpack(sources, into: dir.sub("root"))
            Issue.record("accepted")
        } catch {
            guard case .limitExceeded(let m) = error else { Issue.record("wrong error \(error)"); return }
            #expect(!m.contains(dir.path))
        }
        #expect(readText(dir.sub("root/ok.txt")) == "hello\n")
    }
}
