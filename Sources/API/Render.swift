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

    static func instance(_ r: InstanceRecord) -> JSONValue {
        var o = JSONObject()
        o["id"] = .string(r.id)
        o["name"] = .string(r.name)
        o["image"] = .string(r.image)
        o["state"] = .string(r.state.rawValue)
        o["state_error"] = r.state == .unknown ? .optional(r.stateError) : .null
        o["size"] = .string(Size.format(r.size))
        o["hotplug_size"] = .string(Size.format(r.hotplugSize))
        o["overlay_size"] = .string(Size.format(r.overlaySize))
        o["vcpus"] = .int(Int64(r.vcpus))
        if !r.env.isEmpty { o["env"] = .stringMap(r.env) }
        if r.networkEnabled {
            o["network"] = ["enabled": true, "name": "default", "ip": .optional(r.ip), "mac": .optional(r.mac)]
        } else {
            o["network"] = ["enabled": false, "ip": .null, "mac": .null]
        }
        if !r.volumes.isEmpty {
            o["volumes"] = .array(r.volumes.map { v in
                var m = JSONObject()
                m["volume_id"] = .string(v.volumeID)
                m["mount_path"] = .string(v.mountPath)
                m["readonly"] = .bool(v.readonly || v.overlay)
                if v.overlay {
                    m["overlay"] = true
                    m["overlay_size"] = .string(Size.format(v.overlaySize ?? 0))
                }
                return .object(m)
            })
        }
        if let h = r.hypervisor { o["hypervisor"] = .string(h) }
        o["created_at"] = .string(r.createdAt)
        o["started_at"] = .optional(r.startedAt)
        o["stopped_at"] = .optional(r.stoppedAt)
        o["has_snapshot"] = .bool(r.hasSnapshot)
        return .object(o)
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
