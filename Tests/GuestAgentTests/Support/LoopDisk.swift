import Glibc
import Testing

/// An ext4 image in a temp file attached to a loop device, advertised to the agent under a fake
/// `--sys-block` directory as `<sysBlock>/<loopN>/serial`. `detach()` always runs in tests.
final class LoopDisk {
    let image: String
    let device: String
    var name: String { String(device.split(separator: "/").last ?? "") }

    /// Whether this machine can run the mount tests: root, losetup and mkfs.ext4, /dev/loop-control.
    static let available: Bool = getuid() == 0 && access("/dev/loop-control", F_OK) == 0
        && access("/usr/sbin/losetup", X_OK) == 0 && access("/usr/sbin/mkfs.ext4", X_OK) == 0
    static let skipReason: Comment = "mount tests need root, /dev/loop-control, losetup and mkfs.ext4"

    /// A 32 MiB ext4 image at `image` (holding `files` from the start) on a free loop device.
    init(image: String, files: [String: String] = [:], in directory: TempDirectory) throws {
        self.image = image
        var populate: [String] = []
        if !files.isEmpty {
            let seed = "seed-\(image.split(separator: "/").last ?? "disk")"
            try directory.makeDirectory(seed)
            for (name, text) in files { try directory.write("\(seed)/\(name)", text) }
            populate = ["-d", "\(directory.path)/\(seed)"]
        }
        let truncated = HostCommand.run("/usr/bin/truncate", ["-s", "32M", image])
        guard truncated.status == 0 else { throw AgentTestError("truncate \(image): \(truncated.output)") }
        let made = HostCommand.run("/usr/sbin/mkfs.ext4", ["-q", "-F"] + populate + [image])
        guard made.status == 0 else { throw AgentTestError("mkfs.ext4 \(image): \(made.output)") }
        let attached = HostCommand.run("/usr/sbin/losetup", ["-f", "--show", image])
        guard attached.status == 0, attached.output.hasPrefix("/dev/loop") else {
            throw AgentTestError("losetup -f --show \(image) failed (no free loop device?): \(attached.output)")
        }
        device = String(attached.output.filter { !$0.isWhitespace })
    }

    /// Makes the disk visible to the agent as `serial` under `sysBlock`.
    func advertise(serial: String, sysBlock: String) throws {
        let dir = "\(sysBlock)/\(name)"
        guard mkdir(dir, 0o755) == 0 || errno == EEXIST else { throw AgentTestError("mkdir \(dir) failed") }
        let fd = open("\(dir)/serial", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw AgentTestError("cannot write \(dir)/serial") }
        let text = Array("\(serial)\n".utf8)
        _ = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Detaches the loop device (lazily unmounting anything still using it first).
    func detach() {
        for line in (readText("/proc/self/mountinfo") ?? "").split(separator: "\n") {
            let fields = line.split(separator: " ")
            if let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count, fields[dash + 2] == device {
                _ = umount2(String(fields[4]), Int32(MNT_DETACH))
            }
        }
        _ = HostCommand.run("/usr/sbin/losetup", ["-d", device])
    }
}
