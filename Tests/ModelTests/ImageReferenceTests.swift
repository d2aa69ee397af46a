import Testing
@testable import Model

@Suite struct ImageReferenceTests {
    @Test func normalizesDockerHubNames() throws {
        #expect(try ImageReference.parse("alpine").normalized == "docker.io/library/alpine:latest")
        #expect(try ImageReference.parse("nginx:alpine").normalized == "docker.io/library/nginx:alpine")
        #expect(try ImageReference.parse("user/app:1.0").normalized == "docker.io/user/app:1.0")
        #expect(try ImageReference.parse("docker.io/library/alpine:latest").normalized == "docker.io/library/alpine:latest")
        #expect(try ImageReference.parse("index.docker.io/library/alpine").normalized == "docker.io/library/alpine:latest")
    }

    @Test func keepsRegistriesWithPortsAndDigests() throws {
        let d = "sha256:" + String(repeating: "a", count: 64)
        let r = try ImageReference.parse("127.0.0.1:5000/test/busybox@\(d)")
        #expect(r.registry == "127.0.0.1:5000")
        #expect(r.path == "test/busybox")
        #expect(r.tag == nil)
        #expect(r.digest == d)
        #expect(r.normalized == "127.0.0.1:5000/test/busybox@\(d)")
        let l = try ImageReference.parse("localhost/x:v1")
        #expect(l.registry == "localhost")
        #expect(try ImageReference.parse("alpine:3@\(d)").normalized == "docker.io/library/alpine:3@\(d)")
        #expect(r.pinned(to: d).manifestReference == d)
    }

    @Test func rejectsBadReferences() {
        for bad in ["", "invalid::", "has spaces", "UPPER/case", "a//b", "alpine:", "alpine@sha256:123", "-lead", "x:" + String(repeating: "t", count: 129)] {
            #expect(throws: APIError.self, "\(bad) must be rejected") { try ImageReference.parse(bad) }
        }
        do { _ = try ImageReference.parse("has spaces") } catch { #expect(error.code == .invalidName) }
    }
}
