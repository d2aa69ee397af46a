import Testing
import Foundation
@testable import API
import FastCGI
import JSON
import Model
import Store

/// An in-memory exchange: the handler runs without sockets (the `.router` way of testing).
final class FakeExchange: Exchange {
    var body: [UInt8]
    var status = 0
    var headers: [(String, String)] = []
    var out: [UInt8] = []
    init(_ body: [UInt8] = []) { self.body = body }
    func readBody(max: Int) -> [UInt8] {
        let n = min(max, body.count)
        defer { body.removeFirst(n) }
        return Array(body.prefix(n))
    }
    func writeHead(status: Int, headers: [(String, String)]) { self.status = status; self.headers = headers }
    func write(_ bytes: [UInt8]) -> Bool { out += bytes; return true }
    func flush() -> Bool { true }
    var json: JSONValue? { try? JSON.parse(out) }
}

final class Harness {
    let handler: APIHandler
    let dir: String
    init() throws {
        dir = "/tmp/apit-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/run/w", withIntermediateDirectories: true)
        setenv("DATA_DIR", dir, 1)
        setenv("HYPEMAN_RUN_DIR", dir + "/run", 1)
        unsetenv("HYPEMAN_DB")
        setenv("SYNC_WAIT_SECONDS", "1", 1)
        let cfg = try APIConfig.fromEnvironment()
        handler = try APIHandler(config: cfg, threadIndex: Int.random(in: 0..<1_000_000)) { _ in }
    }
    deinit { try? FileManager.default.removeItem(atPath: dir) }

    @discardableResult
    func call(_ method: String, _ path: String, json: String? = nil, contentType: String = "application/json") -> FakeExchange {
        let body = Array((json ?? "").utf8)
        let parts = path.split(separator: "?", maxSplits: 1)
        let req = Request(method: method, path: String(parts[0]), query: parts.count > 1 ? String(parts[1]) : "",
                          contentType: contentType, contentLength: body.count, subject: "t")
        let ex = FakeExchange(body)
        handler.handle(req, ex)
        return ex
    }
}

@Suite(.serialized) struct APIHandlerTests {
    @Test func healthAndUnknownRoutes() throws {
        let h = try Harness()
        let ok = h.call("GET", "/health")
        #expect(ok.status == 200)
        #expect(ok.json == ["status": "ok"])
        let nf = h.call("GET", "/nope")
        #expect(nf.status == 404)
        #expect(nf.json?["code"] == "not_found")
        let na = h.call("PUT", "/instances")
        #expect(na.status == 405)
        #expect(na.headers.contains { $0.0 == "Allow" })
        #expect(h.call("GET", "/instances/%zz").status == 400)
    }

    @Test func createInstanceValidationCodes() throws {
        let h = try Harness()
        func code(_ body: String) -> (Int, String?) {
            let ex = h.call("POST", "/instances", json: body)
            return (ex.status, ex.json?["code"]?.stringValue)
        }
        #expect(code("{bad").0 == 400)
        #expect(code("[]") == (400, "Bad Request"))
        #expect(code(#"{"image":"alpine"}"#) == (400, "Bad Request"))
        #expect(code(#"{"name":"Bad_Name","image":"alpine"}"#) == (400, "Bad Request"))
        #expect(code(#"{"name":"a","image":"alpine","size":"1.5GB"}"#) == (400, "invalid_size"))
        #expect(code(#"{"name":"a","image":"alpine","hotplug_size":"lots"}"#) == (400, "invalid_hotplug_size"))
        #expect(code(#"{"name":"a","image":"alpine","overlay_size":"1Gb"}"#) == (400, "invalid_overlay_size"))
        #expect(code(#"{"name":"a","image":"alpine","vcpus":-1}"#) == (400, "Bad Request"))
        #expect(code(#"{"name":"a","image":"alpine","vcpus":64}"#) == (400, "limit_exceeded"))
        #expect(code(#"{"name":"a","image":"alpine","overlay_size":"200GB"}"#) == (400, "limit_exceeded"))
        #expect(code(#"{"name":"a","image":"alpine","env":{"BAD KEY":"x"}}"#) == (400, "Bad Request"))
        #expect(code(#"{"name":"a","image":"has spaces"}"#) == (400, "invalid_name"))
        #expect(code(#"{"name":"a","image":"alpine"}"#) == (404, "not_found"))
        #expect(code(#"{"name":"a","image":"alpine","volumes":[{"volume_id":"v","mount_path":"/etc"}]}"#) == (400, "Bad Request"))
        #expect(code(#"{"name":"a","image":"alpine","volumes":[{"volume_id":"v","mount_path":"/d","overlay":true}]}"#) == (400, "Bad Request"))
        #expect(code(#"{"name":"a","image":"alpine","volumes":[{"volume_id":"v","mount_path":"/d","readonly":true,"overlay":true,"overlay_size":"x"}]}"#) == (400, "invalid_overlay_size"))
        // Messages are valid JSON even with quotes in the input.
        let ex = h.call("POST", "/instances", json: #"{"name":"a","image":"alpine","size":"\"quoted\""}"#)
        #expect(ex.json?["message"]?.stringValue?.contains("\"quoted\"") == true)
        #expect(try h.handler.store.listInstances().isEmpty)
    }

    @Test func overflowingSizesAndCountsAreClientErrors() throws {
        let h = try Harness()
        func code(_ body: String) -> (Int, String?) {
            let ex = h.call("POST", "/instances", json: body)
            return (ex.status, ex.json?["code"]?.stringValue)
        }
        // 7 EiB + 7 EiB does not fit in Int64: refused before any limit is compared.
        #expect(code(#"{"name":"a","image":"alpine","size":"7EB","hotplug_size":"7EB"}"#) == (400, "invalid_hotplug_size"))
        #expect(code(#"{"name":"a","image":"alpine","size":"9223372036854775807GB"}"#) == (400, "invalid_size"))
        #expect(code(#"{"name":"a","image":"alpine","hotplug_size":"9223372036854775807"}"#) == (400, "invalid_hotplug_size"))
        #expect(code(#"{"name":"a","image":"alpine","hotplug_size":"4EB"}"#) == (400, "limit_exceeded"))
        #expect(code(#"{"name":"a","image":"alpine","overlay_size":"99999999999999999999EB"}"#) == (400, "invalid_overlay_size"))
        #expect(code(#"{"name":"a","image":"alpine","overlay_size":"7EB"}"#) == (400, "limit_exceeded"))
        #expect(code(#"{"name":"a","image":"alpine","vcpus":9223372036854775807}"#) == (400, "Bad Request"))
        #expect(code(#"{"name":"a","image":"alpine","vcpus":9223372036854775808}"#).0 == 400)
        #expect(code(#"{"name":"a","image":"alpine","vcpus":1e300}"#) == (400, "Bad Request"))
        #expect(code(#"{"name":"a","image":"alpine","volumes":[{"volume_id":"v","mount_path":"/d","readonly":true,"overlay":true,"overlay_size":"7EB"}]}"#) == (400, "limit_exceeded"))
        #expect(try h.handler.store.listInstances().isEmpty)
    }

    @Test func imageNotReadyAndReadyLookup() throws {
        let h = try Harness()
        let d = "sha256:" + String(repeating: "c", count: 64)
        try h.handler.store.linkImage(name: "docker.io/library/alpine:latest", repository: "docker.io/library/alpine", digest: d,
                                      sourceRef: "docker.io/library/alpine@" + d)
        let ex = h.call("POST", "/instances", json: #"{"name":"a","image":"alpine"}"#)
        #expect(ex.status == 409)
        #expect(ex.json?["code"] == "image_not_ready")
        // URL-encoded name resolves (the reference's quirk fixed).
        let g = h.call("GET", "/images/docker.io%2Flibrary%2Falpine%3Alatest")
        #expect(g.status == 200)
        #expect(g.json?["status"] == "pending")
        #expect(g.json?["queue_position"] == 1)
        #expect(h.call("GET", "/images/alpine").status == 200)
        #expect(h.call("GET", "/images/docker.io/library/alpine:latest").status == 200)
        #expect(h.call("GET", "/images/docker.io%2Flibrary%2Falpine@" + d).status == 200)
        #expect(h.call("GET", "/images/" + "bad%20name").json?["code"] == "invalid_name")
        #expect(h.call("GET", "/images/busybox").status == 404)
    }

    @Test func ingressValidation() throws {
        let h = try Harness()
        func code(_ body: String) -> (Int, String?) {
            let ex = h.call("POST", "/ingresses", json: body)
            return (ex.status, ex.json?["code"]?.stringValue)
        }
        #expect(code(#"{"name":"web","rules":[]}"#) == (400, "Bad Request"))
        #expect(code(#"{"name":"web","rules":[{"match":{"hostname":"api-{x}.example.com"},"target":{"instance":"{x}","port":80}}]}"#) == (400, "bad_request"))
        #expect(code(#"{"name":"web","rules":[{"match":{"hostname":"{x}.example.com"},"target":{"instance":"{y}","port":80}}]}"#) == (400, "bad_request"))
        #expect(code(#"{"name":"web","rules":[{"match":{"hostname":"*.example.com"},"target":{"instance":"a","port":80}}]}"#) == (400, "bad_request"))
        #expect(code(#"{"name":"web","rules":[{"match":{"hostname":"a.example.com","port":70000},"target":{"instance":"a","port":80}}]}"#) == (400, "bad_request"))
        #expect(code(#"{"name":"web","rules":[{"match":{"hostname":"a.example.com"},"target":{"instance":"a","port":80},"redirect_http":true}]}"#) == (400, "bad_request"))
        #expect(code(#"{"name":"web","rules":[{"match":{"hostname":"a.example.com"},"target":{"instance":"a","port":80},"tls":true}]}"#) == (400, "bad_request"))
        #expect(code(#"{"name":"web","rules":[{"match":{"hostname":"a.example.com"},"target":{"instance":"nope","port":80}}]}"#) == (404, "instance_not_found"))
        let ok = h.call("POST", "/ingresses", json: #"{"name":"web","rules":[{"match":{"hostname":"{app}.example.com"},"target":{"instance":"{app}","port":8080}}]}"#)
        #expect(ok.status == 201)
        #expect(ok.json?["rules"]?.arrayValue?.first?["match"]?["port"] == 80)
        #expect(code(#"{"name":"web","rules":[{"match":{"hostname":"b.example.com"},"target":{"instance":"{x}","port":80}}]}"#) == (409, "already_exists"))
        #expect(code(#"{"name":"web2","rules":[{"match":{"hostname":"{app}.example.com"},"target":{"instance":"{app}","port":80}}]}"#) == (409, "hostname_in_use"))
        #expect(code(#"{"name":"web","rules":[{"match":{"hostname":"{z}.other.com"},"target":{"instance":"{z}","port":80}}]}"#) == (409, "already_exists"))
        let id = ok.json?["id"]?.stringValue ?? ""
        #expect(h.call("GET", "/ingresses/web").status == 200)
        #expect(h.call("GET", "/ingresses/\(id.prefix(10))").status == 200)
        #expect(h.call("DELETE", "/ingresses/\(id)").status == 204)
        #expect(h.call("GET", "/ingresses/\(id)").status == 404)
    }

    @Test func volumeRequestValidation() throws {
        let h = try Harness()
        #expect(h.call("POST", "/volumes", json: "").json?["code"] == "invalid_request")
        #expect(h.call("POST", "/volumes", json: #"{"name":"v"}"#).status == 400)
        #expect(h.call("POST", "/volumes", json: #"{"name":"v","size_gb":0}"#).json?["code"] == "invalid_field")
        #expect(h.call("POST", "/volumes", json: #"{"name":"v","size_gb":1,"id":"../../etc"}"#).json?["code"] == "invalid_field")
        let mp = "--XYZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nv\r\n--XYZ--\r\n"
        #expect(h.call("POST", "/volumes", json: mp, contentType: "multipart/form-data; boundary=XYZ").json?["code"] == "missing_file")
        #expect(h.call("POST", "/volumes", json: "garbage", contentType: "multipart/form-data; boundary=XYZ").json?["code"] == "invalid_form")
        #expect(h.call("GET", "/volumes/nope").status == 404)
        #expect(h.call("POST", "/volumes/from-archive?name=v").json?["code"] == "missing_field")
    }

    @Test func instanceJSONIsExact() throws {
        let h = try Harness()
        let s = h.handler.store
        for v in ["va", "vb"] {
            try s.insertVolume(id: v, name: v, sizeGB: 1, maxTotalGB: 0)
            try s.setVolumeReady(id: v, sizeGB: 1)
        }
        var a = InstanceRecord(id: "ia0000000000000000000001", name: "web", image: "docker.io/library/nginx:alpine", imageDigest: "sha256:x",
                               state: .created, size: 1 << 30, hotplugSize: 3 << 30, overlaySize: 10 << 30, vcpus: 2,
                               env: ["PORT": "8080", "Q": "say \"hi\"\n\u{1}/é"], networkEnabled: true, hypervisor: "qemu",
                               createdAt: "2026-01-01T00:00:00.000000Z",
                               volumes: [InstanceVolume(volumeID: "vb", mountPath: "/b", readonly: true, overlay: true, overlaySize: 1 << 29),
                                         InstanceVolume(volumeID: "va", mountPath: "/a", readonly: false, overlay: false, overlaySize: nil)])
        try s.insertInstance(a, limits: .init())
        try s.db.run("UPDATE instances SET state = 'Unknown', state_error = 'lost \"it\"', ip = '10.0.0.2', mac = '02:00', started_at = 's' WHERE id = ?", [a.id])
        a = InstanceRecord(id: "ib0000000000000000000002", name: "off", image: "alpine", imageDigest: "sha256:y", state: .stopped, size: 512 << 20,
                           hotplugSize: 0, overlaySize: 1 << 30, vcpus: 1, env: [:], networkEnabled: false, hypervisor: nil,
                           createdAt: "2026-01-02T00:00:00.000000Z", volumes: [])
        try s.insertInstance(a, limits: .init())
        try s.db.run("UPDATE instances SET state_error = 'hidden', stopped_at = 't', has_snapshot = 1 WHERE id = ?", [a.id])

        let one = #"{"id":"ia0000000000000000000001","name":"web","image":"docker.io/library/nginx:alpine","state":"Unknown","state_error":"lost \"it\"","size":"1024.0 MB","hotplug_size":"3.0 GB","overlay_size":"10.0 GB","vcpus":2,"env":{"PORT":"8080","Q":"say \"hi\"\n\u0001/é"},"network":{"enabled":true,"name":"default","ip":"10.0.0.2","mac":"02:00"},"volumes":[{"volume_id":"vb","mount_path":"/b","readonly":true,"overlay":true,"overlay_size":"512.0 MB"},{"volume_id":"va","mount_path":"/a","readonly":false}],"hypervisor":"qemu","created_at":"2026-01-01T00:00:00.000000Z","started_at":"s","stopped_at":null,"has_snapshot":false}"#
        let two = #"{"id":"ib0000000000000000000002","name":"off","image":"alpine","state":"Stopped","state_error":null,"size":"512.0 MB","hotplug_size":"0 B","overlay_size":"1024.0 MB","vcpus":1,"network":{"enabled":false,"ip":null,"mac":null},"created_at":"2026-01-02T00:00:00.000000Z","started_at":null,"stopped_at":"t","has_snapshot":true}"#
        let g = h.call("GET", "/instances/web")
        #expect(g.status == 200)
        #expect(g.headers.first { $0.0 == "Content-Length" }?.1 == String(g.out.count))
        #expect(String(decoding: g.out, as: UTF8.self) == one)
        #expect(String(decoding: h.call("GET", "/instances/ib0000000000000000000002").out, as: UTF8.self) == two)
        #expect(String(decoding: h.call("GET", "/instances").out, as: UTF8.self) == "[" + one + "," + two + "]")
    }

    @Test func logsQueryValidation() throws {
        let h = try Harness()
        let rec = InstanceRecord(id: CUID2.make(), name: "x", image: "i", imageDigest: "d", state: .stopped, size: 1, hotplugSize: 0,
                                 overlaySize: 1, vcpus: 1, env: [:], networkEnabled: false, hypervisor: nil, createdAt: Timestamp.now(), volumes: [])
        try h.handler.store.insertInstance(rec, limits: .init())
        #expect(h.call("GET", "/instances/x/logs?tail=abc").json?["code"] == "Bad Request")
        #expect(h.call("GET", "/instances/x/logs?source=kernel").json?["code"] == "Bad Request")
        #expect(h.call("GET", "/instances/x/logs").json?["code"] == "log_not_found")
        try FileManager.default.createDirectory(atPath: "\(h.dir)/guests/\(rec.id)/logs", withIntermediateDirectories: true)
        try "one\ntwo \"q\"\nthree\npartial".write(toFile: "\(h.dir)/guests/\(rec.id)/logs/app.log", atomically: true, encoding: .utf8)
        let ex = h.call("GET", "/instances/x/logs?tail=2")
        #expect(ex.status == 200)
        #expect(String(decoding: ex.out, as: UTF8.self) == "data: \"two \\\"q\\\"\"\n\ndata: \"three\"\n\n")
        // Wrong state for operations → 409 with the contract's message.
        let st = h.call("POST", "/instances/x/stop")
        #expect(st.status == 409)
        #expect(st.json?["message"] == "invalid state transition: cannot stop from state Stopped, must be Running")
    }
}

@Suite struct MultipartTests {
    @Test func readsFieldsAndStreamsFiles() throws {
        let payload = [UInt8]((0..<300_000).map { UInt8($0 % 251) })
        var body = Array("--b0\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nmy vol\r\n".utf8)
        body += Array("--b0\r\nContent-Disposition: form-data; name=\"content\"; filename=\"a.tgz\"\r\nContent-Type: application/gzip\r\n\r\n".utf8)
        body += payload
        body += Array("\r\n--b0\r\nContent-Disposition: form-data; name=\"size_gb\"\r\n\r\n2\r\n--b0--\r\n".utf8)
        var fields: [String: String] = [:]
        var file: [UInt8] = []
        var ends = 0
        try MultipartReader(boundary: Array("b0".utf8)).read(from: FakeExchange(body), field: { fields[$0] = $1 }, file: { _, c in
            if let c { file += c } else { ends += 1 }
        })
        #expect(fields == ["name": "my vol", "size_gb": "2"])
        #expect(file == payload)
        #expect(ends == 1)
        #expect(MultipartReader.boundary(fromContentType: "multipart/form-data; boundary=\"ab c\"") == "ab c")
    }

    @Test func pathSegmentsDecodePerSegment() {
        #expect(pathSegments("/images/docker.io%2Flibrary%2Falpine:latest") == ["images", "docker.io/library/alpine:latest"])
        #expect(pathSegments("/a//b/") == ["a", "b"])
        #expect(pathSegments("/x%2") == nil)
        #expect(pathSegments("") == [] && pathSegments("/") == [] && pathSegments("//") == [])
        #expect(pathSegments("/instances/caf%C3%A9/logs") == ["instances", "café", "logs"])
        #expect(pathSegments("/zoë/%25") == ["zoë", "%"])
        #expect(pathSegments("/a/%FF") == nil)
        #expect(parseQuery("tail=5&follow=true&x=a+b%21") == ["tail": "5", "follow": "true", "x": "a b!"])
    }
}
