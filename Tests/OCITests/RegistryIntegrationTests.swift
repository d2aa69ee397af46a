import Foundation
import HTTPFetch
import Model
import Synchronization
import Testing
@testable import OCI

/// Against a real registry filled by tests/fixtures/make-test-images.sh:
///   HYPEMAN_TEST_REGISTRY=127.0.0.1:5000 (no auth)
///   HYPEMAN_TEST_AUTH_REGISTRY=127.0.0.1:5001 and HYPEMAN_TEST_AUTH_CREDS=user:pass (basic auth)
let testRegistry = ProcessInfo.processInfo.environment["HYPEMAN_TEST_REGISTRY"].flatMap { $0.isEmpty ? nil : $0 }
let authRegistry = ProcessInfo.processInfo.environment["HYPEMAN_TEST_AUTH_REGISTRY"].flatMap { $0.isEmpty ? nil : $0 }
let authCreds = ProcessInfo.processInfo.environment["HYPEMAN_TEST_AUTH_CREDS"].flatMap { $0.isEmpty ? nil : $0 }

@Suite(.enabled(if: testRegistry != nil, "HYPEMAN_TEST_REGISTRY not set (start one with tests/fixtures/registry.sh and fill it with make-test-images.sh)"))
struct RegistryIntegrationTests {
    let host = testRegistry ?? ""
    var client: RegistryClient { RegistryClient(options: RegistryOptions(insecureRegistries: [host])) }

    func pullAndUnpack(_ name: String, dir: TempDir) throws -> (PulledImage, String) {
        let store = try BlobStore(root: dir.sub("cache"))
        let progress = Mutex<[Int64]>([])
        let pulled = try ImagePuller(registry: client, store: store).pull(try ImageReference.parse("\(host)/\(name)"),
                                                                          progress: { done, _ in progress.withLock { $0.append(done) } })
        let seen = progress.withLock { $0 }
        #expect(seen.last == pulled.layers.reduce(0) { $0 + $1.size })
        #expect(seen == seen.sorted())
        let root = dir.sub("rootfs")
        _ = try LayerUnpacker.unpack(try pulled.layerSources(in: store), into: root)
        return (pulled, root)
    }

    @Test(arguments: ["test/busybox:latest", "test/busybox:v2s2", "test/busybox:zstd"])
    func busyboxInEveryFormat(name: String) throws {
        let dir = TempDir("int")
        let (pulled, root) = try pullAndUnpack(name, dir: dir)
        #expect(pulled.config.config?.Entrypoint == ["/bin/sh"])
        #expect(pulled.config.config?.Cmd == ["/app.sh"])
        #expect(pulled.config.environment["GREETING"] == "hello")
        #expect(pulled.config.config?.WorkingDir == "/srv")
        #expect(pulled.platform == .linuxAMD64)
        #expect(readText(root + "/app.sh")?.contains("hello from app.sh") == true)
        #expect(FileManager.default.isExecutableFile(atPath: root + "/bin/busybox"))
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: root + "/bin/ls")) == "/bin/busybox")
        var st = stat()
        #expect(lstat(root + "/tmp", &st) == 0 && st.st_mode & 0o7777 == 0o1777)
    }

    @Test func layersApplyWhiteoutsAndOpaqueDirectories() throws {
        let dir = TempDir("int")
        let (pulled, root) = try pullAndUnpack("test/layers:latest", dir: dir)
        #expect(pulled.layers.count == 3)
        #expect(!exists(root + "/etc/removed-file"))
        #expect(!exists(root + "/old-dir"))
        #expect(!exists(root + "/opaque/lower-a"))
        #expect(!exists(root + "/opaque/sub"))
        #expect(readText(root + "/opaque/new") == "upper\n")
        #expect(readText(root + "/keep") == "layer 2\n")
        #expect(readText(root + "/layer3") == "layer 3\n")
        #expect(!exists(root + "/.wh.old-dir"))
    }

    @Test func indexPicksLinuxAMD64() throws {
        let dir = TempDir("int")
        let (pulled, _) = try pullAndUnpack("test/multi:latest", dir: dir)
        #expect(pulled.manifestDigests.count == 2)
        #expect(pulled.config.environment["ARCH_MARK"] == "amd64")
    }

    @Test func resolveGivesTheManifestDigest() throws {
        let ref = try ImageReference.parse("\(host)/test/multi:latest")
        let head = try client.resolve(ref, timeout: 5)
        #expect(head.mediaType == MediaType.ociIndex)
        let m = try client.fetchManifest(ref, reference: head.digest, http: try HTTPClient())
        #expect(m.digest == head.digest)
        // Pinned references resolve to themselves.
        #expect(try client.resolve(ref.pinned(to: head.digest), timeout: 5).digest == head.digest)
    }

    @Test func unknownNamesAreNotFound() throws {
        for name in ["test/busybox:nope", "nosuch/repo:latest",
                     "test/busybox@sha256:" + String(repeating: "0", count: 64)] {
            do {
                _ = try client.resolve(try ImageReference.parse("\(host)/\(name)"), timeout: 5)
                Issue.record("\(name) resolved")
            } catch let e as OCIError {
                guard case .notFound = e else { Issue.record("\(name): wrong error \(e)"); continue }
            }
        }
        let dir = TempDir("int")
        do {
            _ = try ImagePuller(registry: client, store: try BlobStore(root: dir.path)).pull(try ImageReference.parse("\(host)/nosuch/repo:latest"))
            Issue.record("pull of a missing repository worked")
        } catch let e as OCIError {
            guard case .notFound = e else { Issue.record("wrong error \(e)"); return }
        }
    }

    @Test func concurrentFetchesOfOneBlobDownloadItOnce() throws {
        let dir = TempDir("int")
        let store = try BlobStore(root: dir.path)
        let ref = try ImageReference.parse("\(host)/test/busybox:latest")
        let m = try client.fetchManifest(ref, reference: "latest", http: try HTTPClient())
        guard case .manifest(let man) = try m.decode() else { Issue.record("expected a manifest"); return }
        let layer = man.layers[0]
        let downloads = Mutex(0)
        let failures = Mutex<[String]>([])
        let c = client
        Parallel.run(count: 4, width: 4) { _ in
            do {
                if try c.fetchBlob(ref, descriptor: layer, into: store, http: try HTTPClient()) { downloads.withLock { $0 += 1 } }
            } catch { failures.withLock { $0.append("\(error)") } }
        }
        #expect(failures.withLock { $0 }.isEmpty)
        #expect(downloads.withLock { $0 } == 1)
        #expect(store.contains(layer.digest))
        // A second pull of the whole image finds everything cached.
        let again = try ImagePuller(registry: c, store: store).pull(ref)
        #expect(again.layers == man.layers)
    }
}

@Suite(.enabled(if: authRegistry != nil && authCreds != nil,
                "HYPEMAN_TEST_AUTH_REGISTRY / HYPEMAN_TEST_AUTH_CREDS not set (tests/fixtures/registry.sh start PORT DIR user:pass)"))
struct AuthRegistryIntegrationTests {
    let host = authRegistry ?? ""

    @Test func basicCredentialsFromAnAuthFile() throws {
        let dir = TempDir("auth")
        let file = dir.sub("config.json")
        let b64 = Data((authCreds ?? "").utf8).base64EncodedString()
        FileManager.default.createFile(atPath: file, contents: Data(#"{"auths":{"\#(host)":{"auth":"\#(b64)"}}}"#.utf8))
        let auth = try DockerAuthConfig.load(path: file)
        let withCreds = RegistryClient(options: RegistryOptions(insecureRegistries: [host], auth: auth))
        let ref = try ImageReference.parse("\(host)/test/busybox:latest")
        let pulled = try ImagePuller(registry: withCreds, store: try BlobStore(root: dir.sub("cache"))).pull(ref)
        #expect(pulled.config.environment["GREETING"] == "hello")

        let anonymous = RegistryClient(options: RegistryOptions(insecureRegistries: [host]))
        do {
            _ = try anonymous.resolve(ref, timeout: 5)
            Issue.record("anonymous access accepted")
        } catch {
            guard case .unauthorized = error else { Issue.record("wrong error \(error)"); return }
        }
    }
}
