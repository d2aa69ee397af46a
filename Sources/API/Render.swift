import JSON
import Model
import Store

/// Resource → JSON, in the contract's shapes (field order as the reference prints them).
enum Render {
    static func image(_ r: ImageRecord) -> JSONValue {
        var o = JSONObject()
        o["name"] = .string(r.name)
        o["digest"] = .string(r.digest)
        o["status"] = .string(r.status)
        o["queue_position"] = r.queuePosition.map { .int(Int64($0)) } ?? .null
        o["error"] = .optional(r.error)
        o["size_bytes"] = r.status == "ready" ? .optional(r.sizeBytes) : .null
        o["entrypoint"] = (r.entrypoint?.isEmpty ?? true) ? .null : .strings(r.entrypoint!)
        o["cmd"] = (r.cmd?.isEmpty ?? true) ? .null : .strings(r.cmd!)
        if !r.env.isEmpty { o["env"] = .stringMap(r.env) }
        o["working_dir"] = .optional(r.workingDir.flatMap { $0.isEmpty ? nil : $0 })
        if let p = r.platform { o["platform"] = .string(p) }
        o["progress"] = ["bytes_done": .int(r.bytesDone), "bytes_total": .int(r.bytesTotal)]
        o["created_at"] = .string(r.createdAt)
        return .object(o)
    }

    /// An instance, written straight into `w` (the hot path of GET /instances/{id}).
    static func instance(_ r: InstanceRecord, into w: inout JSONWriter) {
        w.beginObject()
        w.key("id"); w.string(r.id)
        w.key("name"); w.string(r.name)
        w.key("image"); w.string(r.image)
        w.key("state"); w.string(r.state.rawValue)
        w.key("state_error"); w.string(r.state == .unknown ? r.stateError : nil)
        w.key("size"); w.string(Size.format(r.size))
        w.key("hotplug_size"); w.string(Size.format(r.hotplugSize))
        w.key("overlay_size"); w.string(Size.format(r.overlaySize))
        w.key("vcpus"); w.int(Int64(r.vcpus))
        if !r.env.isEmpty {
            w.key("env")
            w.beginObject()
            for k in r.env.keys.sorted() {
                w.key(escaping: k)
                w.string(r.env[k]!)
            }
            w.endObject()
        }
        w.key("network")
        w.beginObject()
        w.key("enabled"); w.bool(r.networkEnabled)
        if r.networkEnabled { w.key("name"); w.string("default") }
        w.key("ip"); w.string(r.networkEnabled ? r.ip : nil)
        w.key("mac"); w.string(r.networkEnabled ? r.mac : nil)
        w.endObject()
        if !r.volumes.isEmpty {
            w.key("volumes")
            w.beginArray()
            for v in r.volumes {
                w.beginObject()
                w.key("volume_id"); w.string(v.volumeID)
                w.key("mount_path"); w.string(v.mountPath)
                w.key("readonly"); w.bool(v.readonly || v.overlay)
                if v.overlay {
                    w.key("overlay"); w.bool(true)
                    w.key("overlay_size"); w.string(Size.format(v.overlaySize ?? 0))
                }
                w.endObject()
            }
            w.endArray()
        }
        if let h = r.hypervisor { w.key("hypervisor"); w.string(h) }
        w.key("created_at"); w.string(r.createdAt)
        w.key("started_at"); w.string(r.startedAt)
        w.key("stopped_at"); w.string(r.stoppedAt)
        w.key("has_snapshot"); w.bool(r.hasSnapshot)
        w.endObject()
    }

    /// An instance as a JSON document.
    static func instance(_ r: InstanceRecord) -> [UInt8] {
        var w = JSONWriter()
        instance(r, into: &w)
        return w.bytes
    }

    /// A list of instances as a JSON array.
    static func instances(_ rs: [InstanceRecord]) -> [UInt8] {
        var w = JSONWriter(capacity: 512 * max(1, rs.count))
        w.beginArray()
        for r in rs { instance(r, into: &w) }
        w.endArray()
        return w.bytes
    }

    static func volume(_ r: VolumeRecord) -> JSONValue {
        var o = JSONObject()
        o["id"] = .string(r.id)
        o["name"] = .string(r.name)
        o["size_gb"] = .int(Int64(r.sizeGB))
        if !r.attachments.isEmpty {
            o["attachments"] = .array(r.attachments.map {
                ["instance_id": .string($0.instanceID), "mount_path": .string($0.mountPath), "readonly": .bool($0.readonly)]
            })
        }
        o["created_at"] = .string(r.createdAt)
        return .object(o)
    }

    static func ingress(_ r: IngressRecord) -> JSONValue {
        ["id": .string(r.id), "name": .string(r.name), "rules": r.rules, "created_at": .string(r.createdAt)]
    }
}
