@testable import ExecGateway
import Foundation
import Testing
import Wakeup

@Suite("Exec gateway: only requests nginx authenticated, on a group-only socket")
struct SubjectTests {
    @Test("an upgrade without X-Auth-Subject (or with an empty one) is 401 JSON before any lookup or upgrade")
    func noSubjectIs401() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        for replacing in [["X-Auth-Subject": nil], ["X-Auth-Subject": ""]] as [[String: String?]] {
            let c = try h.client()
            c.send(WebSocketTestClient.upgradeRequest(target: "/instances/box/exec", replacing: replacing))
            let reply = try c.readHTTPReply()
            #expect(reply.status == 401)
            #expect(reply.headers["www-authenticate"] == "Bearer")
            #expect(reply.headers["sec-websocket-accept"] == nil)
            #expect(reply.json?["code"] as? String == "Unauthorized")
            #expect(c.readsEOF())
        }
        // Nothing was looked up for them; the same request with a subject goes through.
        #expect(h.backend.resolved.isEmpty)
        let c = try h.client()
        c.send(WebSocketTestClient.upgradeRequest(target: "/instances/box/exec", replacing: ["X-Auth-Subject": "-"]))
        #expect(try c.readHTTPReply().status == 101)
        #expect(h.backend.resolved == ["box"])
    }

    @Test("'.' and '..' (also percent-encoded) are no instance reference")
    func dotReferences() throws {
        for target in ["/instances/./exec", "/instances/../exec", "/instances/%2e/exec", "/instances/%2E%2e/exec"] {
            #expect(throws: ExecHTTPError.self, "\(target)") { try ExecRoute.instanceRef(method: "GET", target: target) }
        }
        #expect(try ExecRoute.instanceRef(method: "GET", target: "/instances/a.b/exec") == "a.b")
        #expect(try ExecRoute.instanceRef(method: "GET", target: "/instances/...x/exec") == "...x")
    }

    @Test("the socket is 0660 with the socket group (0600 root-only without one)")
    func socketMode() throws {
        let h = try GatewayHarness()
        defer { h.stop() }
        var st = stat()
        #expect(stat(h.path, &st) == 0)
        let access = try SocketAccess.current.get()
        #expect(st.st_mode & 0o777 == access.socketMode)
        if let gid = access.group, geteuid() == 0 { #expect(st.st_gid == gid) }
        #expect(st.st_mode & 0o007 == 0, "others must have no access")
    }
}
