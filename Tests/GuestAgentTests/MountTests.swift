import AgentProtocol
import Glibc
import Testing

/// A temp dir with a fake `--sys-block`, loop-device disks and an agent using them. `cleanUp()`
/// stops the agent, unmounts everything below the dir, detaches the loops and deletes the dir.
private final class MountLab {
    let dir: TempDirectory
    var sysBlock: String { "\(dir.path)/sysblock" }
    var stateDir: String { "\(dir.path)/state" }
    private var disks: [LoopDisk] = []
    private var agent: AgentProcess?

    init(_ label: String) throws {
        dir = try TempDirectory(label)
        try dir.makeDirectory("sysblock")
    }

    /// A new ext4 loop disk, advertised as `serial` unless nil.
    func disk(_ name: String, serial: String?, files: [String: String] = [:]) throws -> LoopDisk {
        let disk = try LoopDisk(image: "\(dir.path)/\(name).img", files: files, in: dir)
        disks.append(disk)
        if let serial { try disk.advertise(serial: serial, sysBlock: sysBlock) }
        return disk
    }

    func startAgent(root: String = "/") throws -> AgentClient {
        let agent = try AgentProcess(label: "mount", root: root,
                                     arguments: ["--sys-block", sysBlock, "--dev", "/dev", "--state-dir", stateDir], directory: dir)
        self.agent = agent
        return try agent.connect()
    }

    var agentLog: String { agent?.log ?? "" }

    func cleanUp() {
        agent?.stop()
        let mounted = HostMounts.mountPoints().filter { $0.hasPrefix(dir.path + "/") }.sorted { $0.count > $1.count }
        for mountPoint in mounted { _ = umount2(mountPoint, Int32(MNT_DETACH)) }
        for disk in disks { disk.detach() }
        dir.remove()
    }
}

/// Suites that touch host mounts run one after another: `unshare -m` (VirtioPortTests) copies
/// the mount table, and a copied mount keeps a loop device's filesystem busy for MountTests.
@Suite(.serialized) struct HostMountSuites {}

extension HostMountSuites {
@Suite(.serialized, .enabled(if: LoopDisk.available, LoopDisk.skipReason))
struct MountTests {
    @Test func readWriteMountIsBusyWhileInUseThenUnmounts() throws {
        let lab = try MountLab("rw")
        defer { lab.cleanUp() }
        _ = try lab.disk("a", serial: "vol-a")
        let client = try lab.startAgent()
        let target = "\(lab.dir.path)/app/data"

        let mounted = try client.request(.mount, stream: 1, MountRequest(serial: "vol-a", mountPath: target, mode: .readWrite).encode())
        #expect(mounted.ok, "\(mounted.message)\n\(lab.agentLog)")
        #expect(HostMounts.fsType(at: target) == "ext4")
        let wrote = try client.run(ExecStart(command: ["sh", "-c", "echo written > \(target)/file && cat \(target)/file"]), stream: 2)
        #expect(wrote.stdoutText == "written\n")

        let twice = try client.request(.mount, stream: 3, MountRequest(serial: "vol-a", mountPath: target, mode: .readWrite).encode())
        #expect(!twice.ok && twice.message.contains("already a mount point"), "\(twice.message)")

        try client.start(4, ExecStart(command: ["sh", "-c", "echo ready; exec sleep 1000"], cwd: target))
        _ = try client.waitOutput(4, containing: "ready")
        let busy = try client.request(.unmount, stream: 5, UnmountRequest(mountPath: target).encode())
        #expect(busy == RequestResult(ok: false, busy: true, message: "\(target) is busy (files are open or a process has its cwd there)"))
        #expect(HostMounts.isMountPoint(target), "a busy unmount must leave the mount in place")

        try client.send(.signal, stream: 4, SignalRequest(signal: SIGKILL).encode())
        _ = try client.waitExit(4)
        let unmounted = try client.request(.unmount, stream: 6, UnmountRequest(mountPath: target).encode())
        #expect(unmounted.ok, "\(unmounted.message)")
        #expect(!HostMounts.isMountPoint(target))
        let nothing = try client.request(.unmount, stream: 7, UnmountRequest(mountPath: target).encode())
        #expect(nothing == RequestResult(ok: false, message: "nothing is mounted at \(target)"))

        // Only volume mounts (ext4, overlay) are the host's to unmount.
        try lab.dir.makeDirectory("scratch")
        guard mount("tmpfs", "\(lab.dir.path)/scratch", "tmpfs", 0, nil) == 0 else { throw AgentTestError("cannot mount a tmpfs") }
        let tmpfs = try client.request(.unmount, stream: 9, UnmountRequest(mountPath: "\(lab.dir.path)/scratch").encode())
        #expect(!tmpfs.ok && tmpfs.message.contains("it is a tmpfs mount, not a volume"), "\(tmpfs.message)")
        #expect(HostMounts.isMountPoint("\(lab.dir.path)/scratch"))

        // The write reached the disk.
        let again = try client.request(.mount, stream: 8, MountRequest(serial: "vol-a", mountPath: "\(lab.dir.path)/again", mode: .readOnly).encode())
        #expect(again.ok, "\(again.message)")
        #expect(lab.dir.read("again/file") == "written\n")
    }

    @Test func readOnlyMountWaitsForTheDiskAndRefusesWrites() throws {
        let lab = try MountLab("ro")
        defer { lab.cleanUp() }
        let disk = try lab.disk("b", serial: nil, files: ["hello.txt": "from the image\n"])
        let client = try lab.startAgent()
        let target = "\(lab.dir.path)/ro"

        // The disk is "hotplugged" after the request.
        try client.send(.mount, stream: 1, MountRequest(serial: "vol-late", mountPath: target, mode: .readOnly).encode())
        usleep(600_000)
        try disk.advertise(serial: "vol-late", sysBlock: lab.sysBlock)
        let mounted = try RequestResult(decoding: client.reply(.result, stream: 1, within: 5).payload)
        #expect(mounted.ok, "\(mounted.message)\n\(lab.agentLog)")
        #expect(lab.dir.read("ro/hello.txt") == "from the image\n")

        let write = try client.run(ExecStart(command: ["sh", "-c", "echo x > \(target)/new"]), stream: 2)
        #expect(write.exit?.code != 0)
        #expect(write.stderrText.contains("Read-only file system"), "stderr: \(write.stderrText)")
        #expect(!lab.dir.exists("ro/new"))
        #expect(try client.request(.unmount, stream: 3, UnmountRequest(mountPath: target).encode()).ok)
    }

    @Test func overlayMountKeepsTheBaseUnchanged() throws {
        let lab = try MountLab("overlay")
        defer { lab.cleanUp() }
        _ = try lab.disk("base", serial: "vol-b", files: ["base.txt": "original\n"])
        _ = try lab.disk("upper", serial: "ovl-b")
        let client = try lab.startAgent()
        let target = "\(lab.dir.path)/ov"

        let mounted = try client.request(.mount, stream: 1,
                                         MountRequest(serial: "vol-b", overlaySerial: "ovl-b", mountPath: target, mode: .overlay).encode())
        #expect(mounted.ok, "\(mounted.message)\n\(lab.agentLog)")
        #expect(HostMounts.fsType(at: target) == "overlay")
        #expect(HostMounts.isMountPoint("\(lab.stateDir)/vol-b/base") && HostMounts.isMountPoint("\(lab.stateDir)/vol-b/rw"))

        let script = "cat base.txt; echo changed > base.txt; echo new > added.txt; cat base.txt"
        let changed = try client.run(ExecStart(command: ["sh", "-c", script], cwd: target), stream: 2)
        #expect(changed.stdoutText == "original\nchanged\n", "stderr: \(changed.stderrText)")

        let unmounted = try client.request(.unmount, stream: 3, UnmountRequest(mountPath: target).encode())
        #expect(unmounted == RequestResult(ok: true))
        #expect(!HostMounts.isMountPoint(target))
        #expect(!HostMounts.isMountPoint("\(lab.stateDir)/vol-b/base"), "the overlay's base layer stayed mounted")
        #expect(!HostMounts.isMountPoint("\(lab.stateDir)/vol-b/rw"), "the overlay's rw layer stayed mounted")

        let base = try client.request(.mount, stream: 4, MountRequest(serial: "vol-b", mountPath: "\(lab.dir.path)/check-base", mode: .readOnly).encode())
        #expect(base.ok, "\(base.message)")
        #expect(lab.dir.read("check-base/base.txt") == "original\n")
        #expect(!lab.dir.exists("check-base/added.txt"))
        let upper = try client.request(.mount, stream: 5, MountRequest(serial: "ovl-b", mountPath: "\(lab.dir.path)/check-upper", mode: .readOnly).encode())
        #expect(upper.ok, "\(upper.message)")
        #expect(lab.dir.read("check-upper/upper/base.txt") == "changed\n")
        #expect(lab.dir.read("check-upper/upper/added.txt") == "new\n")
    }

    @Test func symlinkedMountPathsResolveInsideTheRoot() throws {
        let lab = try MountLab("symlink")
        defer { lab.cleanUp() }
        _ = try lab.disk("c", serial: "vol-c")
        try lab.dir.makeDirectory("root")
        try lab.dir.makeDirectory("outside")
        try lab.dir.symlink("root/out", to: "\(lab.dir.path)/outside")   // absolute: restarts at the root
        try lab.dir.symlink("root/up", to: "../../../..")                 // cannot climb above the root
        try lab.dir.symlink("root/loop", to: "/loop")
        let root = "\(lab.dir.path)/root"
        let client = try lab.startAgent(root: root)

        let mounted = try client.request(.mount, stream: 1, MountRequest(serial: "vol-c", mountPath: "/up/out/vol", mode: .readWrite).encode())
        #expect(mounted.ok, "\(mounted.message)\n\(lab.agentLog)")
        let inside = "\(root)\(lab.dir.path)/outside/vol"
        #expect(HostMounts.isMountPoint(inside), "expected the mount at \(inside)")
        #expect(!lab.dir.exists("outside/vol"), "the mount path escaped the root")

        let looping = try client.request(.mount, stream: 2, MountRequest(serial: "vol-c", mountPath: "/loop/x", mode: .readWrite).encode())
        #expect(!looping.ok && looping.message.contains("Too many levels of symbolic links"), "\(looping.message)")
        let overRoot = try client.request(.unmount, stream: 3, UnmountRequest(mountPath: "/up").encode())
        #expect(!overRoot.ok && overRoot.message.contains("app root"), "\(overRoot.message)")
        let malformed = try client.request(.mount, stream: 4, [1, 2])
        #expect(!malformed.ok && malformed.message.contains("bad mount request"))

        let unmounted = try client.request(.unmount, stream: 5, UnmountRequest(mountPath: "/out/vol").encode())
        #expect(unmounted.ok, "\(unmounted.message)")
        #expect(!HostMounts.isMountPoint(inside))
    }
}
}
