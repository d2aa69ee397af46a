import Foundation
import Testing
@testable import OCI

@Suite struct AuthChallengeTests {
    @Test func dockerHubBearer() {
        let c = AuthChallenge.parse(#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#)
        #expect(c.count == 1)
        #expect(c.first?.scheme == "bearer")
        #expect(c.first?.realm == "https://auth.docker.io/token")
        #expect(c.first?.service == "registry.docker.io")
        #expect(c.first?.scope == "repository:library/alpine:pull")
    }

    @Test func quotedCommasEscapesAndSpaces() {
        let c = AuthChallenge.parse(#"bearer  realm = "https://x/t" , scope="repository:a/b:pull,push", error="say \"hi\"""#)
        #expect(c.count == 1)
        #expect(c.first?.scope == "repository:a/b:pull,push")
        #expect(c.first?.parameters["error"] == #"say "hi""#)
        #expect(c.first?.realm == "https://x/t")
    }

    @Test func severalChallenges() {
        let c = AuthChallenge.parse(#"Basic realm="reg", Bearer realm="https://t",service=s"#)
        #expect(c.map(\.scheme) == ["basic", "bearer"])
        #expect(c[0].realm == "reg")
        #expect(c[1].service == "s")
    }

    @Test func garbageGivesNoParameters() {
        #expect(AuthChallenge.parse("").isEmpty)
        let c = AuthChallenge.parse("Negotiate")
        #expect(c == [AuthChallenge(scheme: "negotiate", parameters: [:])])
    }
}

@Suite struct DockerAuthConfigTests {
    @Test func readsAuthsAndAliases() throws {
        let user = Data("alice:pa:ss".utf8).base64EncodedString()
        let json = """
        {"auths": {"https://index.docker.io/v1/": {"auth": "\(user)"},
                   "127.0.0.1:5000": {"username": "bob", "password": "pw"},
                   "http://reg.example:8080/": {"auth": "\(Data("c:d".utf8).base64EncodedString())"}}}
        """
        let cfg = try DockerAuthConfig.parse(Array(json.utf8))
        #expect(cfg.credentials(for: "docker.io") == RegistryCredentials(username: "alice", password: "pa:ss"))
        #expect(cfg.credentials(for: "registry-1.docker.io")?.username == "alice")
        #expect(cfg.credentials(for: "127.0.0.1:5000") == RegistryCredentials(username: "bob", password: "pw"))
        #expect(cfg.credentials(for: "reg.example:8080")?.password == "d")
        #expect(cfg.credentials(for: "other") == nil)
        #expect(RegistryCredentials(username: "a", password: "b").basicAuthorization == "Basic YTpi")
    }

    @Test func badAuthIsAnError() {
        #expect(throws: OCIError.self) { try DockerAuthConfig.parse(Array(#"{"auths":{"h":{"auth":"bm9jb2xvbg=="}}}"#.utf8)) }
        #expect(throws: OCIError.self) { try DockerAuthConfig.parse(Array("[]".utf8)) }
    }

    @Test func pathPrecedence() {
        #expect(DockerAuthConfig.defaultPath(environment: ["REGISTRY_AUTH_FILE": "/a", "DOCKER_CONFIG": "/b", "HOME": "/h"]) == "/a")
        #expect(DockerAuthConfig.defaultPath(environment: ["DOCKER_CONFIG": "/b", "HOME": "/h"]) == "/b/config.json")
        #expect(DockerAuthConfig.defaultPath(environment: ["HOME": "/h"]) == "/h/.docker/config.json")
    }

    @Test func missingFileIsEmpty() throws {
        #expect(try DockerAuthConfig.load(path: "/nonexistent/config.json").entries.isEmpty)
    }
}

@Suite struct PlatformSelectionTests {
    func index(_ json: String) throws -> ImageIndex { try JSONDecoder().decode(ImageIndex.self, from: Data(json.utf8)) }
    let m = MediaType.ociManifest

    @Test func picksLinuxAMD64AndSkipsAttestations() throws {
        let idx = try index("""
        {"schemaVersion":2,"manifests":[
         {"mediaType":"\(m)","digest":"sha256:\(String(repeating: "a", count: 64))","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
         {"mediaType":"\(m)","digest":"sha256:\(String(repeating: "e", count: 64))","size":1,"platform":{"os":"unknown","architecture":"unknown"}},
         {"mediaType":"\(m)","digest":"sha256:\(String(repeating: "b", count: 64))","size":1,"platform":{"os":"linux","architecture":"amd64"}},
         {"mediaType":"\(m)","digest":"sha256:\(String(repeating: "c", count: 64))","size":1,"platform":{"os":"windows","architecture":"amd64"}}]}
        """)
        #expect(try PlatformSelector.select(idx, for: .linuxAMD64).digest.hasSuffix("bbbb"))
        #expect(try PlatformSelector.select(idx, for: Platform(os: "linux", architecture: "arm64")).digest.hasSuffix("aaaa"))
    }

    @Test func prefersNoVariantThenLowest() throws {
        let idx = try index("""
        {"schemaVersion":2,"manifests":[
         {"mediaType":"\(m)","digest":"sha256:\(String(repeating: "3", count: 64))","size":1,"platform":{"os":"linux","architecture":"amd64","variant":"v3"}},
         {"mediaType":"\(m)","digest":"sha256:\(String(repeating: "2", count: 64))","size":1,"platform":{"os":"linux","architecture":"amd64","variant":"v2"}}]}
        """)
        #expect(try PlatformSelector.select(idx, for: .linuxAMD64).digest.hasSuffix("2222"))
    }

    @Test func noMatchListsWhatThereIs() throws {
        let idx = try index("""
        {"schemaVersion":2,"manifests":[{"mediaType":"\(m)","digest":"sha256:\(String(repeating: "a", count: 64))","size":1,"platform":{"os":"linux","architecture":"s390x"}}]}
        """)
        do {
            _ = try PlatformSelector.select(idx, for: .linuxAMD64)
            Issue.record("expected noMatchingPlatform")
        } catch {
            guard case .noMatchingPlatform(let msg) = error else { Issue.record("wrong error \(error)"); return }
            #expect(msg.contains("linux/s390x"))
        }
    }

    @Test func schema1IsUnsupported() {
        let fm = FetchedManifest(bytes: Array("{}".utf8), mediaType: MediaType.dockerSchema1Signed, digest: "sha256:x")
        #expect(throws: OCIError.self) { _ = try fm.decode() }
    }

    @Test func configEnvironmentSplitsAtFirstEquals() throws {
        let cfg = try JSONDecoder().decode(ImageConfig.self, from: Data(#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1=2","B=","C"]}}"#.utf8))
        #expect(cfg.environment == ["A": "1=2", "B": "", "C": ""])
        #expect(cfg.platform.description == "linux/amd64")
    }

    @Test func registryErrorBodiesDecodeByCode() {
        let body = Array(#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#.utf8)
        #expect(RegistryClient.decodeErrors(body) == [.init(code: "NAME_UNKNOWN", message: "repository name not known to registry")])
        #expect(RegistryClient.decodeErrors(Array("not json".utf8)).isEmpty)
    }
}
