import FastCGI
import JSON
import Model

/// `GET /health` (open: the only route served without an authenticated subject) and the bench
/// endpoint `GET /_bench/hello` (nginx exposes it only in bench mode, with subject `bench`).
enum HealthRoutes {
    static func register(_ r: inout Router) {
        r.add("GET", "/health", open: true) { h, _, ex, _ in
            h.send(ex, status: 200, ["status": "ok"])
        }
        r.add("GET", "/_bench/hello") { h, _, ex, _ in
            h.send(ex, status: 200, ["ok": true])
        }
    }
}
