import FastCGI
import JSON
import Model
import Store
import Wakeup

/// `/images` and `/images/{name}` (name URL-decoded; `repo/with/slashes:tag` also works unencoded).
enum ImageRoutes {
    static func register(_ r: inout Router) {
        r.add("GET", "/images") { h, _, ex, _ in
            h.send(ex, status: 200, .array(try h.store.listImages().map(Render.image)))
        }
        r.add("POST", "/images") { h, req, ex, _ in try create(h, req, ex) }
        r.add("GET", "/images/{name*}") { h, _, ex, p in
            let ref = try ImageReference.parse(p["name"] ?? "")
            guard let img = try h.store.image(for: ref) else { throw APIError(.notFound, "image \(ref.normalized) not found") }
            h.send(ex, status: 200, Render.image(img))
        }
        r.add("DELETE", "/images/{name*}") { h, _, ex, p in
            let ref = try ImageReference.parse(p["name"] ?? "")
            guard let img = try h.store.image(for: ref) else { throw APIError(.notFound, "image \(ref.normalized) not found") }
            try h.store.deleteImageName(img.name)
            // Disks and blobs no longer used are collected by the Provisioner.
            try h.store.enqueue(.imageGC, target: "images")
            wakeProvisioner(h)
            h.sendNoContent(ex)
        }
    }

    static func wakeProvisioner(_ h: APIHandler) { Wakeup.wake(h.config.provisionerSocket) }

    static func create(_ h: APIHandler, _ req: Request, _ ex: any Exchange) throws {
        let body = try RequestBody.read(req, ex)
        try body.allowOnly(["name"])
        let name = try body.requireString("name")
        let ref = try ImageReference.parse(name)
        guard let job = try h.runJob(.pull, target: ref.normalized, payload: ["name": .string(ref.normalized)],
                                     wait: h.config.resolveWaitSeconds) else {
            throw APIError(.timeout, "resolving \(ref.normalized) at its registry is taking too long; it continues in the background — poll GET /images/{name}")
        }
        try h.check(job)
        guard let img = try h.store.image(named: ref.normalized) else {
            throw APIError(.internalError, "image \(ref.normalized) was resolved but is not recorded")
        }
        h.send(ex, status: 202, Render.image(img))
    }
}
