import Foundation
import HTTPFetch
import Model
import Testing
@testable import OCI

/// The client against tests/fixtures/fake-registry.py: auth flows, retries, error decoding, redirects.
@Suite(.enabled(if: pythonAvailable, "needs /usr/bin/python3 for the fake registry"))
struct RegistryClientTests {
    func client(_ fake: FakeRegistry, auth: DockerAuthConfig = DockerAuthConfig(), attempts: Int = 4) -> RegistryClient {
        RegistryClient(options: RegistryOptions(insecureRegistries: [fake.host], auth: auth,
                                                retry: RetryPolicy(maxAttempts: attempts, baseDelay: 0.01, maxDelay: 0.05)))
    }
    func ref(_ fake: FakeRegistry, _ repo: String, _ tag: String = "latest") throws -> ImageReference {
        try ImageReference.parse("\(fake.host)/\(repo):\(tag)")
    }
    var creds: DockerAuthConfig { DockerAuthConfig(entries: ["x": RegistryCredentials(username: "tester", password: "s3cret")]) }

    @Test func anonymousPullOfAnOpenRepository() throws {
        let fake = try FakeRegistry()
        let dir = TempDir("reg")
        let store = try BlobStore(root: dir.path)
        let puller = ImagePuller(registry: client(fake), store: store)
        let pulled = try puller.pull(try ref(fake, "open/img"))
        #expect(pulled.layers.count == 1)
        #expect(pulled.config.config?.Cmd == ["/bin/sh"])
        for d in pulled.blobDigests { #expect(store.contains(d)) }
    }

    @Test func bearerTokenFlowAndCache() throws {
        let fake = try FakeRegistry()
        let c = client(fake)
        let r = try ref(fake, "bearer/img")
        let http = try HTTPClient()
        let head = try c.resolve(r, http: http, timeout: 5)
        #expect(head.digest.hasPrefix("sha256:"))
        _ = try c.fetchManifest(r, reference: "latest", http: http)
        let stats = try fake.stats()
        #expect(stats["/token"] == 1)   // the second call reused the cached token
        #expect(stats["/v2/bearer/img/manifests/latest"] == 3)   // 401, HEAD with token, GET
    }

    @Test func basicAuthNeedsCredentials() throws {
        let fake = try FakeRegistry()
        let r = try ref(fake, "basic/img")
        do {
            _ = try client(fake).resolve(r, timeout: 5)
            Issue.record("no credentials but accepted")
        } catch let error as OCIError {
            guard case .unauthorized = error else { Issue.record("wrong error \(error)"); return }
        }
        let auth = DockerAuthConfig(entries: [fake.host: RegistryCredentials(username: "tester", password: "s3cret")])
        #expect(try client(fake, auth: auth).resolve(r, timeout: 5).digest.hasPrefix("sha256:"))
    }

    @Test func tooManyRequestsIsRetried() throws {
        let fake = try FakeRegistry()
        let dir = TempDir("reg")
        let pulled = try ImagePuller(registry: client(fake), store: try BlobStore(root: dir.path)).pull(try ref(fake, "flaky/img"))
        #expect(pulled.layers.count == 1)
        let stats = try fake.stats()
        #expect(stats["/v2/flaky/img/manifests/latest"] == 2)
    }

    @Test func persistent503IsTransportAfterBoundedRetries() throws {
        let fake = try FakeRegistry()
        do {
            _ = try client(fake, attempts: 3).resolve(try ref(fake, "broken/img"), timeout: 5)
            Issue.record("503 accepted")
        } catch let error as OCIError {
            guard case .transport = error else { Issue.record("wrong error \(error)"); return }
        }
        #expect(try fake.stats()["/v2/broken/img/manifests/latest"] == 3)
    }

    @Test func unknownTagIsNotFound() throws {
        let fake = try FakeRegistry()
        let c = client(fake)
        let http = try HTTPClient()
        do {
            _ = try c.fetchManifest(try ref(fake, "open/img", "nope"), reference: "nope", http: http)
            Issue.record("unknown tag accepted")
        } catch let error as OCIError {
            guard case .notFound(let m) = error else { Issue.record("wrong error \(error)"); return }
            #expect(m.contains("MANIFEST_UNKNOWN"))
        }
        // HEAD has no body: the status alone says 404.
        #expect(throws: OCIError.notFound("\(fake.host)/open/img: HTTP 404")) { _ = try c.resolve(try ref(fake, "open/img", "nope"), timeout: 5) }
    }

    @Test func corruptBlobIsRejectedAndNotCached() throws {
        let fake = try FakeRegistry()
        let dir = TempDir("reg")
        let store = try BlobStore(root: dir.path)
        do {
            _ = try ImagePuller(registry: client(fake), store: store).pull(try ref(fake, "evil/img"))
            Issue.record("corrupt blob accepted")
        } catch let error as OCIError {
            guard case .digestMismatch = error else { Issue.record("wrong error \(error)"); return }
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: store.blobDir)
        #expect(!names.contains { $0.hasPrefix(".tmp-") })
        #expect(names.count == 2)   // manifest and config only
    }

    @Test func blobRedirectsAreFollowed() throws {
        let fake = try FakeRegistry()
        let dir = TempDir("reg")
        let store = try BlobStore(root: dir.path)
        let pulled = try ImagePuller(registry: client(fake), store: store).pull(try ref(fake, "redirect/img"))
        #expect(store.contains(pulled.layers[0].digest))
        #expect(try fake.stats().keys.contains { $0.hasPrefix("/real/") })
    }

    @Test func unreachableRegistryIsTransport() throws {
        // A port nothing listens on (bound and closed by the fake registry's own choice would race; use 9).
        let r = try ImageReference.parse("127.0.0.1:9/x/y:latest")
        let c = RegistryClient(options: RegistryOptions(insecureRegistries: ["127.0.0.1:9"], retry: RetryPolicy(maxAttempts: 2, baseDelay: 0.01)))
        #expect(throws: OCIError.self) { _ = try c.resolve(r, timeout: 2) }
        do { _ = try c.resolve(r, timeout: 2) } catch { if case .transport = error {} else { Issue.record("wrong error \(error)") } }
    }
}

@Suite struct HTTPClientTests {
    @Test func unixSocketRequest() throws {
        guard pythonAvailable else { print("skipping unixSocketRequest: no /usr/bin/python3"); return }
        let dir = TempDir("http")
        let sock = dir.sub("api.sock")
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-c", """
        import socketserver, http.server, sys
        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_PUT(self):
                n = int(self.headers.get('Content-Length', 0)); body = self.rfile.read(n)
                out = b'{"method":"PUT","len":%d,"path":"%s"}' % (len(body), self.path.encode())
                self.send_response(200); self.send_header('Content-Length', str(len(out))); self.end_headers(); self.wfile.write(out)
        class S(socketserver.UnixStreamServer):
            def get_request(self):
                r, _ = super().get_request(); return r, ('local', 0)
        s = S(sys.argv[1], H); print('ready', flush=True); s.serve_forever()
        """, sock]
        let out = Pipe()
        server.standardOutput = out
        try server.run()
        defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
        _ = out.fileHandleForReading.readData(ofLength: 6)
        let http = try HTTPClient()
        let resp = try http.request(method: "PUT", url: "http://localhost/api/v1/vm.boot",
                                    headers: [HTTPHeader("Content-Type", "application/json")],
                                    body: Array("{\"a\":1}".utf8), unixSocket: sock, timeout: 5)
        #expect(resp.status == 200)
        #expect(String(decoding: resp.body, as: UTF8.self) == #"{"method":"PUT","len":7,"path":"/api/v1/vm.boot"}"#)
    }

    @Test func memoryLimitAndTransportErrors() throws {
        let http = try HTTPClient()
        #expect(throws: HTTPError.self) { _ = try http.request(method: "GET", url: "http://127.0.0.1:9/", timeout: 2) }
        #expect(throws: HTTPError.self) { _ = try http.request(method: "GET", url: "file:///etc/passwd", timeout: 2) }
        guard pythonAvailable else { return }
        let fake = try FakeRegistry()
        do {
            _ = try http.request(method: "GET", url: "http://\(fake.host)/v2/open/img/manifests/latest", maxBody: 10)
            Issue.record("body limit not enforced")
        } catch {
            #expect(error == .bodyTooLarge(limit: 10))
        }
    }
}
