import Foundation
import Model
import Store
import VMM
import AgentProtocol

/// Live attach/detach on a running instance: the disk is hot-plugged (QEMU `blockdev-add` +
/// `device_add`, CH `vm.add-disk`) and the guest agent mounts it at `mount_path`; detach asks the
/// agent to unmount first and refuses with 409 while the guest still uses the volume.
extension InstanceManager {
    /// How long a mount or unmount may take in the guest (a hot-plugged disk needs a moment to appear).
    static let agentRequestTimeout: Double = 30

    func liveAttach(_ inst: InstanceRecord, job: JobRecord, store: Store) throws {
        guard let volumeID = job.payload["volume_id"]?.stringValue, let mountPath = job.payload["mount_path"]?.stringValue else {
            throw APIError(.internalError, "attach job \(job.id) has no volume_id/mount_path")
        }
        let readonly = job.payload["readonly"]?.boolValue ?? false
        let (vm, link) = try liveTargets(inst, verb: "attach")
        let mount = InstanceVolume(volumeID: volumeID, mountPath: mountPath, readonly: readonly, overlay: false, overlaySize: nil)
        // The row first: it is the atomic multi-attach check, so two instances can never both
        // mount one volume read-write, even for a moment. Every later failure removes it again.
        try store.attachVolume(instanceID: inst.id, mount, limits: InstanceLimits())
        var undo: [() -> Void] = [{ _ = try? store.detachVolume(instanceID: inst.id, volumeID: volumeID) }]
        do {
            let disk = DiskSpec(id: "vol-\(volumeID)", path: "\(config.volumesDir)/\(volumeID)/data.raw", readonly: readonly)
            do { try vm.addDisk(disk) } catch {
                throw APIError(error.isUnsupported ? .notImplemented : .internalError,
                               "hot-plugging the disk of volume \(volumeID) failed: \(error)")
            }
            undo.append { try? vm.removeDisk(id: disk.id) }
            let request = MountRequest(serial: disk.serial, mountPath: mountPath, mode: readonly ? .readOnly : .readWrite)
            let result: RequestResult
            do { result = try link.request(.mount, payload: request.encode(), timeout: Self.agentRequestTimeout) } catch {
                throw APIError(.internalError, "asking the guest agent to mount volume \(volumeID) failed: \(error)")
            }
            guard result.ok else {
                throw APIError(.conflict, "the guest could not mount volume \(volumeID) at \(mountPath): \(result.message); nothing was changed")
            }
            note(inst.id, "volume \(volumeID) attached live at \(mountPath)\(readonly ? " (read-only)" : "")")
            log.info("volume attached live", ["instance_id": inst.id, "volume_id": volumeID, "mount_path": mountPath])
        } catch {
            for u in undo.reversed() { u() }
            note(inst.id, "live attach of volume \(volumeID) failed: \(error)", level: "ERROR")
            throw error
        }
    }

    func liveDetach(_ inst: InstanceRecord, job: JobRecord, store: Store) throws {
        guard let volumeID = job.payload["volume_id"]?.stringValue else {
            throw APIError(.internalError, "detach job \(job.id) has no volume_id")
        }
        guard let mount = inst.volumes.first(where: { $0.volumeID == volumeID }) else {
            throw APIError(.notFound, "volume \(volumeID) is not attached to instance \(inst.id)")
        }
        let (vm, link) = try liveTargets(inst, verb: "detach")
        let result: RequestResult
        do {
            result = try link.request(.unmount, payload: UnmountRequest(mountPath: mount.mountPath).encode(),
                                      timeout: Self.agentRequestTimeout)
        } catch {
            throw APIError(.internalError, "asking the guest agent to unmount volume \(volumeID) failed: \(error)")
        }
        guard result.ok else {
            if result.busy {
                throw APIError(.conflict, "volume \(volumeID) is busy in the guest at \(mount.mountPath) (open files or a process working there); "
                               + "stop using it and retry, or stop the instance first. Nothing was changed")
            }
            throw APIError(.conflict, "the guest could not unmount volume \(volumeID) at \(mount.mountPath): \(result.message); nothing was changed")
        }
        var ids = ["vol-\(volumeID)"]
        if mount.overlay { ids.append("volov-\(volumeID)") }
        do {
            for id in ids { try vm.removeDisk(id: id) }
        } catch {
            // Put the guest back as it was: the disk is still there, mount it again.
            let mode: MountMode = mount.overlay ? .overlay : mount.readonly ? .readOnly : .readWrite
            let again = MountRequest(serial: DiskSpec.serial(forID: ids[0]), overlaySerial: mount.overlay ? DiskSpec.serial(forID: ids[1]) : "",
                                     mountPath: mount.mountPath, mode: mode)
            _ = try? link.request(.mount, payload: again.encode(), timeout: Self.agentRequestTimeout)
            throw APIError(.internalError, "unplugging the disk of volume \(volumeID) failed (it stays attached): \(error)")
        }
        try store.detachVolume(instanceID: inst.id, volumeID: volumeID)
        if mount.overlay { try? FileManager.default.removeItem(atPath: dir(inst.id) + "/vol-overlays/\(volumeID).raw") }
        note(inst.id, "volume \(volumeID) detached live from \(mount.mountPath)")
        log.info("volume detached live", ["instance_id": inst.id, "volume_id": volumeID])
    }

    /// The VM and its ready agent link, or the 409 that says why live changes are not possible now.
    private func liveTargets(_ inst: InstanceRecord, verb: String) throws -> (any RunningVM, AgentLink) {
        guard inst.state == .running else {
            throw APIError(.invalidState, "cannot \(verb) a volume in state \(inst.state.rawValue), must be Running or Stopped")
        }
        guard let vm = vm(inst.id) else { throw APIError(.internalError, "no live VMM handle for instance \(inst.id)") }
        if inst.skipGuestAgent {
            throw APIError(.invalidState, "instance \(inst.id) was created with skip_guest_agent, so volumes cannot be "
                           + "\(verb == "attach" ? "mounted" : "unmounted") live; stop the instance to change its volumes")
        }
        guard agentEnabled(inst), let link = agents.link(inst.id), link.isReady else {
            throw APIError(.invalidState, "the guest agent of instance \(inst.id) is not connected, so the volume cannot be "
                           + "\(verb == "attach" ? "mounted" : "unmounted") live; wait until it is Running, or stop the instance first")
        }
        return (vm, link)
    }
}

extension Error {
    /// A driver's "this VMM cannot do that" (VMMError.unsupported).
    var isUnsupported: Bool {
        if let e = self as? VMMError, case .unsupported = e { return true }
        return false
    }
}
