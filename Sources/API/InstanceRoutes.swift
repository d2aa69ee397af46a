import FastCGI
import JSON
import Model
import Store

/// `/instances`, `/instances/{id}`, the lifecycle operations and volume attach/detach.
enum InstanceRoutes {
    static let hypervisors = ["cloud-hypervisor", "qemu"]
    /// The most vCPUs any request may name, whatever MAX_VCPUS_PER_INSTANCE says (0 = no
    /// configured limit still stays within what a VMM and the totals can count).
    static let maxVCPUs = 1024

    static func register(_ r: inout Router) {
        r.add("GET", "/instances") { h, _, ex, _ in
            h.send(ex, status: 200, Render.instances(try h.store.listInstances()))
        }
        r.add("POST", "/instances") { h, req, ex, _ in try create(h, req, ex) }
        r.add("GET", "/instances/{id}") { h, _, ex, p in
            h.send(ex, status: 200, Render.instance(try h.store.resolveInstance(p["id"] ?? "").get()))
        }
        r.add("DELETE", "/instances/{id}") { h, _, ex, p in
            let inst = try h.store.resolveInstance(p["id"] ?? "").get()
            guard let job = try h.runJob(.delete, target: inst.id) else { return h.sendNoContent(ex, status: 202) }
            try h.check(job)
            h.sendNoContent(ex)
        }
        for op in [InstanceOperation.standby, .restore, .stop, .start] {
            r.add("POST", "/instances/{id}/\(op.rawValue)") { h, _, ex, p in try operate(h, ex, p["id"] ?? "", op) }
        }
        r.add("GET", "/instances/{id}/logs") { h, req, ex, p in try LogStream.serve(h, req, ex, p["id"] ?? "") }
        r.add("POST", "/instances/{id}/volumes/{volumeId}") { h, req, ex, p in
            try VolumeAttachRoutes.attach(h, req, ex, p["id"] ?? "", p["volumeId"] ?? "")
        }
        r.add("DELETE", "/instances/{id}/volumes/{volumeId}") { h, _, ex, p in
            try VolumeAttachRoutes.detach(h, ex, p["id"] ?? "", p["volumeId"] ?? "")
        }
    }

    /// standby / restore / stop / start: gate on the stored state (409), run the job, answer 200.
    static func operate(_ h: APIHandler, _ ex: any Exchange, _ key: String, _ op: InstanceOperation) throws {
        let inst = try h.store.resolveInstance(key).get()
        if let e = op.gate(inst.state) { throw e }
        guard let job = try h.runJob(JobKind(rawValue: op.rawValue) ?? .stop, target: inst.id) else {
            return h.send(ex, status: 202, Render.instance(try h.store.instance(id: inst.id) ?? inst))
        }
        try h.check(job)
        guard let now = try h.store.instance(id: inst.id) else { throw APIError(.notFound, "resource not found") }
        h.send(ex, status: 200, Render.instance(now))
    }

    static func parseSize(_ body: RequestBody, _ key: String, _ code: ErrorCode, default d: Int64) throws -> Int64 {
        guard let s = try body.string(key) else { return d }
        guard let v = Size.parse(s) else { throw APIError(code, "invalid size format: \(key) \"\(s)\" is not a size like 512MB or 2GB (integers, binary units)") }
        return v == 0 ? d : v
    }

    static func create(_ h: APIHandler, _ req: Request, _ ex: any Exchange) throws {
        let body = try RequestBody.read(req, ex)
        try body.allowOnly(["name", "image", "size", "hotplug_size", "overlay_size", "vcpus", "env", "network", "volumes",
                            "hypervisor", "auto_pull", "skip_guest_agent"])
        let name = try body.requireString("name")
        guard Names.isValidResourceName(name) else {
            throw body.fail("name", name.utf8.count > 63 ? "maximum string length is 63"
                            : "string doesn't match the regular expression \"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$\"")
        }
        let imageName = try body.requireString("image")
        let size = try parseSize(body, "size", .invalidSize, default: Size.GiB)
        let hotplug = try parseSize(body, "hotplug_size", .invalidHotplugSize, default: 3 * Size.GiB)
        let overlay = try parseSize(body, "overlay_size", .invalidOverlaySize, default: 10 * Size.GiB)
        let vcpusRaw = try body.int("vcpus") ?? 2
        if vcpusRaw < 0 { throw body.fail("vcpus", "number must be at least 0") }
        if vcpusRaw > Int64(maxVCPUs) { throw body.fail("vcpus", "number must be at most \(maxVCPUs)") }
        var vcpus = Int(vcpusRaw)
        if vcpus == 0 { vcpus = 2 }
        let env = try body.stringMap("env") ?? [:]
        for k in env.keys where !Names.isValidEnvKey(k) {
            throw body.fail("env/\(k)", "environment variable names must match [A-Za-z_][A-Za-z0-9_]*")
        }
        let network = try body.nested("network")
        try network?.allowOnly(["enabled"])
        let networkEnabled = try network?.bool("enabled") ?? true
        let skipGuestAgent = try body.bool("skip_guest_agent") ?? false
        let hypervisor = try body.string("hypervisor")
        if let hv = hypervisor, !hypervisors.contains(hv) {
            throw body.fail("hypervisor", "value is not one of the allowed values \(hypervisors)")
        }

        // Limits (the reference answered 500 here; these are client mistakes).
        let cfg = h.config
        if overlay > cfg.maxOverlaySize {
            throw APIError(.limitExceeded, "overlay_size \(Size.format(overlay)) exceeds the maximum of \(Size.format(cfg.maxOverlaySize))")
        }
        if cfg.maxVCPUsPerInstance > 0 && vcpus > cfg.maxVCPUsPerInstance {
            throw APIError(.limitExceeded, "vcpus \(vcpus) exceeds the maximum of \(cfg.maxVCPUsPerInstance) per instance")
        }
        guard let memory = Size.sum(size, hotplug) else {
            throw APIError(.invalidHotplugSize, "size + hotplug_size (\(Size.format(size)) + \(Size.format(hotplug))) is larger than any memory size")
        }
        if cfg.maxMemoryPerInstance > 0 && memory > cfg.maxMemoryPerInstance {
            throw APIError(.limitExceeded, "size + hotplug_size (\(Size.format(memory))) exceeds the maximum of \(Size.format(cfg.maxMemoryPerInstance)) per instance")
        }

        let volumes = try (body.array("volumes") ?? []).map { try parseMount($0, maxOverlay: cfg.maxOverlaySize) }

        let ref = try ImageReference.parse(imageName)
        let autoPull = try body.bool("auto_pull") ?? h.config.autoPull
        guard let img = try h.store.image(for: ref) ?? (autoPull ? pullForCreate(h, ref) : nil) else {
            throw APIError(.notFound, "image \(ref.normalized) not found: pull it first with POST /images (or set auto_pull)")
        }
        guard img.status == "ready" else {
            throw APIError(.imageNotReady, "image not ready: image status is \(img.status)")
        }
        var seen = Set<String>()
        for v in volumes where !seen.insert(v.mountPath).inserted {
            throw APIError(.badRequest, "duplicate mount_path \(v.mountPath)")
        }

        var rec = InstanceRecord(id: CUID2.make(), name: name, image: imageName, imageDigest: img.digest, state: .created,
                                 size: size, hotplugSize: hotplug, overlaySize: overlay, vcpus: vcpus, env: env,
                                 networkEnabled: networkEnabled, hypervisor: hypervisor, createdAt: Timestamp.now(),
                                 volumes: volumes)
        rec.skipGuestAgent = skipGuestAgent
        try h.store.insertInstance(rec, limits: cfg.limits)
        guard let job = try h.runJob(.create, target: rec.id) else {
            return h.send(ex, status: 202, Render.instance(try h.store.instance(id: rec.id) ?? rec))
        }
        try h.check(job)
        guard let now = try h.store.instance(id: rec.id) else { throw APIError(.internalError, "instance vanished after create") }
        h.send(ex, status: 201, Render.instance(now))
    }

    /// Auto-pull (AUTO_PULL=true, or `"auto_pull": true` in the request): pulls the image and waits
    /// (bounded by SYNC_WAIT_SECONDS) until its build ends; the create then proceeds or reports why not.
    static func pullForCreate(_ h: APIHandler, _ ref: ImageReference) throws -> ImageRecord? {
        guard let job = try h.runJob(.pull, target: ref.normalized, payload: ["name": .string(ref.normalized)],
                                     wait: h.config.resolveWaitSeconds) else {
            throw APIError(.timeout, "resolving \(ref.normalized) is taking too long; pull it with POST /images and retry")
        }
        try h.check(job)
        let deadline = Timestamp.monotonic() + h.config.syncWaitSeconds
        while Timestamp.monotonic() < deadline {
            if let img = try h.store.image(named: ref.normalized), img.status == "ready" || img.status == "failed" {
                if img.status == "failed" { throw APIError(.imageNotReady, "image \(ref.normalized) failed to build: \(img.error ?? "unknown error")") }
                return img
            }
            h.waiter.wait(timeoutMs: 100)
        }
        throw APIError(.timeout, "image \(ref.normalized) is still being pulled; retry the create when GET /images shows it ready")
    }

    /// A `VolumeMount` of the create request, validated (contract §2.3 step 2).
    static func parseMount(_ b: RequestBody, maxOverlay: Int64) throws -> InstanceVolume {
        try b.allowOnly(["volume_id", "mount_path", "readonly", "overlay", "overlay_size"])
        let id = try b.requireString("volume_id")
        let path = try b.requireString("mount_path")
        if let problem = Names.mountPathProblem(path) { throw APIError(.badRequest, problem) }
        let readonly = try b.bool("readonly") ?? false
        let overlay = try b.bool("overlay") ?? false
        var overlaySize: Int64? = nil
        // Checked whenever given, so a malformed size is never silently ignored.
        if let s = try b.string("overlay_size"), Size.parse(s) == nil {
            throw APIError(.invalidOverlaySize, "invalid overlay_size for volume \(id): \"\(s)\" is not a size like 1GB")
        }
        if overlay {
            guard readonly else { throw APIError(.badRequest, "volume \(id): overlay requires readonly=true") }
            guard let s = try b.string("overlay_size") else {
                throw APIError(.badRequest, "volume \(id): overlay_size is required when overlay=true")
            }
            guard let v = Size.parse(s), v > 0 else {
                throw APIError(.invalidOverlaySize, "invalid overlay_size for volume \(id): \"\(s)\" is not a size like 1GB")
            }
            if v > maxOverlay {
                throw APIError(.limitExceeded, "overlay_size \(Size.format(v)) for volume \(id) exceeds the maximum of \(Size.format(maxOverlay))")
            }
            overlaySize = v
        }
        return InstanceVolume(volumeID: id, mountPath: Names.cleanAbsolutePath(path) ?? path, readonly: readonly,
                              overlay: overlay, overlaySize: overlaySize)
    }
}
