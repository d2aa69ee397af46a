import AgentProtocol
import Glibc

/// Mounts and unmounts volume disks inside the app root. Disks are found by their virtio-blk
/// serial (<sysBlock>/<name>/serial; the node is <dev>/<name>). Overlay layers live under
/// <stateDir>/<serial>/{base,rw}.
struct VolumeMounter {
    let root: String
    let sysBlock: String
    let dev: String
    let stateDir: String

    /// The block device node of the disk whose serial is `serial`, nil while there is none.
    func device(serial: String) -> String? {
        for name in directoryEntries(sysBlock) where readTrimmedLine("\(sysBlock)/\(name)/serial") == serial {
            let node = "\(dev)/\(name)"
            if fileType(node, followLinks: true) == S_IFBLK { return node }
        }
        return nil
    }

    /// Filesystem types a volume mount can have (what `mount` makes).
    static let volumeTypes: Set<String> = ["ext4", "overlay"]

    /// A serial names a directory under the state dir and appears in overlay options, so it is
    /// printable ASCII without "/", ",", ":", "\\" or spaces, and not "." or "..".
    static func isValidSerial(_ serial: String) -> Bool {
        !serial.isEmpty && serial != "." && serial != ".."
            && serial.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && !"/,:\\".utf8.contains($0) }
    }

    /// Mounts `device` (and, for an overlay, `overlayDevice` as the writable layer) at the
    /// request's path, creating missing directories. Partial steps are undone on failure.
    func mount(_ request: MountRequest, device: String, overlayDevice: String?) -> RequestResult {
        let path = request.mountPath
        let target: String
        switch RootPath.resolve(path, in: root, create: true) {
        case .success(let t): target = t
        case .failure(let e): return RequestResult(ok: false, message: "mount path \(path) cannot be used: \(e)")
        }
        if target == root { return RequestResult(ok: false, message: "refusing to mount over the app root (\(path))") }
        if MountTable.mount(at: target) != nil {
            return RequestResult(ok: false, message: "\(path) is already a mount point; unmount it first")
        }
        switch request.mode {
        case .readWrite:
            if let e = mountExt4(device, at: target, readOnly: false) {
                return RequestResult(ok: false, message: "mounting \(request.serial) (\(device)) on \(path) failed: \(errnoText(e))")
            }
        case .readOnly:
            if let e = mountExt4(device, at: target, readOnly: true) {
                return RequestResult(ok: false, message: "mounting \(request.serial) (\(device)) read-only on \(path) failed: \(errnoText(e))")
            }
        case .overlay:
            guard let overlayDevice else {
                return RequestResult(ok: false, message: "overlay mount of \(request.serial) needs an overlay disk serial")
            }
            if let failure = mountOverlay(request, device: device, overlayDevice: overlayDevice, target: target) {
                return RequestResult(ok: false, message: failure)
            }
        }
        log("mounted \(request.serial) (\(device)) on \(path) [\(modeName(request.mode))]")
        return RequestResult(ok: true)
    }

    /// Base read-only, rw disk for upper/work, overlay on top; each step undone if a later one fails.
    private func mountOverlay(_ request: MountRequest, device: String, overlayDevice: String, target: String) -> String? {
        let layers = "\(stateDir)/\(request.serial)"
        let base = "\(layers)/base", rw = "\(layers)/rw"
        if MountTable.mount(at: base) != nil || MountTable.mount(at: rw) != nil {
            return "volume \(request.serial) already has overlay layers mounted under \(layers); unmount its other overlay first"
        }
        for dir in [base, rw] {
            if let e = makeDirectories(dir) { return "cannot create \(dir): \(errnoText(e))" }
        }
        if let e = mountExt4(device, at: base, readOnly: true) {
            return "mounting \(request.serial) (\(device)) read-only on \(base) failed: \(errnoText(e))"
        }
        if let e = mountExt4(overlayDevice, at: rw, readOnly: false) {
            umount2(base, 0)
            return "mounting overlay disk \(request.overlaySerial) (\(overlayDevice)) on \(rw) failed: \(errnoText(e))"
        }
        for dir in ["\(rw)/upper", "\(rw)/work"] where mkdir(dir, 0o755) != 0 && errno != EEXIST {
            let e = errno
            umount2(rw, 0); umount2(base, 0)
            return "cannot create \(dir): \(errnoText(e))"
        }
        let options = "lowerdir=\(base),upperdir=\(rw)/upper,workdir=\(rw)/work"
        let rc = options.withCString { Glibc.mount("overlay", target, "overlay", 0, $0) }
        if rc != 0 {
            let e = errno
            umount2(rw, 0); umount2(base, 0)
            return "mounting the overlay of \(request.serial) on \(request.mountPath) failed: \(errnoText(e))"
        }
        return nil
    }

    /// ext4 read-write, or read-only with "noload" (no journal replay on a shared disk).
    private func mountExt4(_ device: String, at target: String, readOnly: Bool) -> Int32? {
        let rc = readOnly
            ? "noload".withCString { Glibc.mount(device, target, "ext4", UInt(MS_RDONLY), $0) }
            : Glibc.mount(device, target, "ext4", 0, nil)
        return rc == 0 ? nil : errno
    }

    /// Unmounts what is mounted at the request's path (busy = nothing changed), then an
    /// overlay's layer mounts (its lowerdirs and the upperdir's parent).
    func unmount(_ request: UnmountRequest) -> RequestResult {
        let path = request.mountPath
        let target: String
        switch RootPath.resolve(path, in: root, create: false) {
        case .success(let t): target = t
        case .failure(let e) where e.code == ENOENT || e.code == ENOTDIR:
            return RequestResult(ok: false, message: "nothing is mounted at \(path)")
        case .failure(let e): return RequestResult(ok: false, message: "mount path \(path) cannot be used: \(e)")
        }
        if target == root { return RequestResult(ok: false, message: "refusing to unmount the app root (\(path))") }
        guard let entry = MountTable.mount(at: target) else {
            return RequestResult(ok: false, message: "nothing is mounted at \(path)")
        }
        // Only volumes: the app's /proc, /dev and friends are not the host's to take away.
        guard VolumeMounter.volumeTypes.contains(entry.fsType) else {
            return RequestResult(ok: false, message: "refusing to unmount \(path): it is a \(entry.fsType) mount, not a volume")
        }
        sync()
        if umount2(target, 0) != 0 {
            let e = errno
            if e == EBUSY {
                return RequestResult(ok: false, busy: true, message: "\(path) is busy (files are open or a process has its cwd there)")
            }
            return RequestResult(ok: false, message: "unmounting \(path) failed: \(errnoText(e))")
        }
        var leftovers: [String] = []
        if entry.fsType == "overlay" {
            let uppers = entry.optionPaths("upperdir").map(parentDirectory)
            for layer in entry.optionPaths("lowerdir") + uppers where MountTable.mount(at: layer) != nil {
                if umount2(layer, 0) != 0 { leftovers.append("\(layer) (\(errnoText(errno)))") }
            }
        }
        log("unmounted \(path)" + (leftovers.isEmpty ? "" : "; layers still mounted: \(leftovers.joined(separator: ", "))"))
        if !leftovers.isEmpty {
            return RequestResult(ok: true, message: "unmounted \(path), but these overlay layers could not be unmounted: \(leftovers.joined(separator: ", "))")
        }
        return RequestResult(ok: true)
    }

    private func parentDirectory(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    private func modeName(_ mode: MountMode) -> String {
        switch mode {
        case .readWrite: return "rw"
        case .readOnly: return "ro"
        case .overlay: return "overlay"
        }
    }
}
