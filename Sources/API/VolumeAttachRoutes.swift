import FastCGI
import JSON
import Model
import Store

/// `POST|DELETE /instances/{id}/volumes/{volumeId}`: live attach/detach on a running instance (a
/// Provisioner job), or a recorded change on a stopped one (takes effect at the next start).
enum VolumeAttachRoutes {
    static func attach(_ h: APIHandler, _ req: Request, _ ex: any Exchange, _ key: String, _ volKey: String) throws {
        let inst = try h.store.resolveInstance(key).get()
        let body = try RequestBody.read(req, ex)
        try body.allowOnly(["mount_path", "readonly"])
        let path = try body.requireString("mount_path")
        if let problem = Names.mountPathProblem(path) { throw APIError(.badRequest, problem) }
        let readonly = try body.bool("readonly") ?? false
        let vol = try h.store.resolveVolume(volKey).get()
        let mount = InstanceVolume(volumeID: vol.id, mountPath: Names.cleanAbsolutePath(path) ?? path, readonly: readonly,
                                   overlay: false, overlaySize: nil)
        if inst.volumes.contains(where: { $0.mountPath == mount.mountPath }) {
            throw APIError(.conflict, "mount_path \(mount.mountPath) is already used on this instance")
        }
        switch inst.state {
        case .stopped:
            try h.store.attachVolume(instanceID: inst.id, mount, limits: h.config.limits)
        case .running:
            try h.store.checkAttach(instanceID: inst.id, mount, limits: h.config.limits)
            let payload: JSONValue = ["volume_id": .string(vol.id), "mount_path": .string(mount.mountPath), "readonly": .bool(readonly)]
            guard let job = try h.runJob(.attach, target: inst.id, payload: payload) else {
                throw APIError(.timeout, "attaching volume \(vol.id) is taking long; it continues in the background")
            }
            try h.check(job)
        default:
            throw APIError(.invalidState, "cannot attach a volume in state \(inst.state.rawValue), must be Running or Stopped")
        }
        h.send(ex, status: 200, Render.instance(try h.store.instance(id: inst.id) ?? inst))
    }

    static func detach(_ h: APIHandler, _ ex: any Exchange, _ key: String, _ volKey: String) throws {
        let inst = try h.store.resolveInstance(key).get()
        let attached = inst.volumes.first { $0.volumeID == volKey }
            ?? (try? h.store.resolveVolume(volKey).get()).flatMap { v in inst.volumes.first { $0.volumeID == v.id } }
        guard let mount = attached else { throw APIError(.notFound, "volume \(volKey) is not attached to instance \(inst.id)") }
        switch inst.state {
        case .stopped:
            try h.store.detachVolume(instanceID: inst.id, volumeID: mount.volumeID)
        case .running:
            guard let job = try h.runJob(.detach, target: inst.id, payload: ["volume_id": .string(mount.volumeID)]) else {
                throw APIError(.timeout, "detaching volume \(mount.volumeID) is taking long; it continues in the background")
            }
            try h.check(job)
        default:
            throw APIError(.invalidState, "cannot detach a volume in state \(inst.state.rawValue), must be Running or Stopped")
        }
        h.send(ex, status: 200, Render.instance(try h.store.instance(id: inst.id) ?? inst))
    }
}
