import FastCGI
import JSON
import Model

/// `GET /health` (open) and the bench endpoint `GET /_bench/hello` (nginx exposes it only in bench mode).
enum HealthRoutes {
    static func register(_ r: inout Router) {
        r.add("GET", "/health") { h, _, ex, _ in
            h.send(ex, status: 200, ["status": "ok"])
        }
        r.add("GET", "/_bench/hello") { h, _, ex, _ in
            h.send(ex, status: 200, ["ok": true])
        }
    }
}
