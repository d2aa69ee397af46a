import Testing
@testable import API
import FastCGI
import JSON

/// The app routes on exactly the path nginx authorised: paths nginx may read differently are
/// refused with 400 `bad_request`, and only open routes are served without a subject.
@Suite(.serialized) struct PathCheckTests {
    func refused(_ raw: String, _ documentURI: String = "") -> Bool {
        if case .refused = checkedSegments(raw, documentURI: documentURI) { return true }
        return false
    }

    @Test func dotSegmentsAreRefusedInEverySpelling() {
        for raw in ["/volumes/..%2Fhealth", "/volumes/..%2fhealth", "/volumes/%2e%2e%2fhealth", "/volumes/%2E%2E%2Fhealth",
                    "/volumes/%2e%2E", "/volumes/%2e", "/volumes/.", "/volumes/..", "/./volumes", "/volumes/x/..",
                    "/images/a%2F.%2Fb", "/images/a%2F..", "/images/..%2F..%2Fopenapi.yaml", "/instances/x/volumes/.%2Fy",
                    "/ingresses/%2E%2e%2F%2E%2e%2Fhealth"] {
            #expect(refused(raw), "\(raw)")
        }
    }

    @Test func nulIsRefused() {
        #expect(refused("/volumes/a%00b"))
        #expect(refused("/volumes/%00"))
        #expect(refused("/images/x%2F%00"))
    }

    @Test func legalPathsStillDecode() {
        #expect(checkedSegments("/images/docker.io%2Flibrary%2Falpine:latest", documentURI: "") ==
                .ok(["images", "docker.io/library/alpine:latest"]))
        #expect(checkedSegments("/volumes/a.b/..c", documentURI: "") == .ok(["volumes", "a.b", "..c"]))
        #expect(checkedSegments("/volumes/...", documentURI: "") == .ok(["volumes", "..."]))
        #expect(checkedSegments("/volumes/%2e%2e%2e", documentURI: "") == .ok(["volumes", "..."]))
        #expect(checkedSegments("/instances/caf%C3%A9", documentURI: "") == .ok(["instances", "café"]))
        #expect(pathSegments("/volumes/..%2Fhealth") == nil)
    }

    @Test func documentURIMustBeTheDecodedMergedPath() {
        // What nginx's $uri is for each raw path: accepted.
        #expect(checkedSegments("/instances", documentURI: "/instances") == .ok(["instances"]))
        #expect(checkedSegments("/images/docker.io%2Flibrary%2Falpine:latest",
                                documentURI: "/images/docker.io/library/alpine:latest") == .ok(["images", "docker.io/library/alpine:latest"]))
        #expect(checkedSegments("//volumes///x", documentURI: "/volumes/x") == .ok(["volumes", "x"]))
        #expect(checkedSegments("/images/a%2F%2Fb", documentURI: "/images/a/b") == .ok(["images", "a//b"]))
        #expect(checkedSegments("/volumes/caf%c3%a9", documentURI: "/volumes/café") == .ok(["volumes", "café"]))
        #expect(checkedSegments("/volumes/a%25b", documentURI: "/volumes/a%b") == .ok(["volumes", "a%b"]))
        // Another location's path: refused, even when no segment alone is suspicious.
        #expect(refused("/volumes/x", "/health"))
        #expect(refused("/volumes/health", "/health"))
        #expect(refused("/volumes/a%2Fb", "/volumes/a"))
        #expect(refused("/instances", "/instances/"))
        #expect(refused("/volumes/a%25b", "/volumes/a%25b"))
        // Without DOCUMENT_URI (not behind nginx) only the segment rules apply.
        #expect(checkedSegments("/volumes/x", documentURI: "") == .ok(["volumes", "x"]))
    }

    @Test func handlerAnswers400AndChangesNothing() throws {
        let h = try Harness()
        let created = h.call("POST", "/volumes", json: #"{"name":"../health","size_gb":1}"#)
        for (method, path) in [("DELETE", "/volumes/..%2Fhealth"), ("GET", "/volumes/%2e%2e%2Fhealth"), ("DELETE", "/volumes/..%2fhealth")] {
            let ex = h.call(method, path)
            #expect(ex.status == 400, "\(method) \(path)")
            #expect(ex.json?["code"] == "bad_request")
        }
        // A volume whose name would be hit is still there (when the name was accepted at all).
        if created.status < 300 {
            #expect(h.call("GET", "/volumes").json.map { "\($0)".contains("../health") } == true)
        }
    }

    @Test func onlyOpenRoutesServeRequestsWithoutSubject() throws {
        let h = try Harness()
        func call(_ method: String, _ path: String, subject: String) -> FakeExchange {
            let ex = FakeExchange()
            h.handler.handle(Request(method: method, path: path, subject: subject), ex)
            return ex
        }
        #expect(call("GET", "/health", subject: "").status == 200)
        // A wrong method on the open path is its 405 (with Allow), not a 401.
        let wrong = call("PUT", "/health", subject: "")
        #expect(wrong.status == 405 && wrong.headers.contains { $0.0 == "Allow" && $0.1 == "GET" })
        for (method, path) in [("GET", "/instances"), ("DELETE", "/volumes/x"), ("GET", "/nope"), ("PUT", "/instances"),
                               ("GET", "/_bench/hello"), ("POST", "/images")] {
            let ex = call(method, path, subject: "")
            #expect(ex.status == 401, "\(method) \(path)")
            #expect(ex.json == ["code": "Unauthorized", "message": "authorization header required"])
            #expect(ex.headers.contains { $0.0 == "WWW-Authenticate" && $0.1 == "Bearer" })
        }
        #expect(call("GET", "/instances", subject: "-").status == 200)
        #expect(call("GET", "/_bench/hello", subject: "bench").status == 200)
    }
}
