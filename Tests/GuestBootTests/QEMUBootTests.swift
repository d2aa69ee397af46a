import Foundation
import Testing
@testable import GuestBoot

/// Boots the real thing under QEMU (TCG): our initramfs + the Debian kernel from
/// scripts/setup-guest-kernel.sh, a busybox rootfs image with no /bin/sh, an overlay disk, the
/// config disk, a rw volume, an overlay volume and a restricted user-mode NIC. Then presses the
/// ACPI power button and expects the guest to power off.
///
/// Kernel: $HYPEMAN_KERNEL_DIR, else /var/tmp/hypeman-kernel or /var/lib/hypeman-kernel.
/// HYPEMAN_INITRAMFS_COMPRESSION=none boots an uncompressed initramfs instead of gzip (timing).
@Suite(.serialized) struct QEMUBootTests {
    static let marker = "APP-MARKER-7f3a"

    @Test(.timeLimit(.minutes(3))) func bootsAppWithEnvVolumesAndPowerButton() throws {
        let env = ProcessInfo.processInfo.environment
        guard let found = BootPrerequisites.find(test: "bootsAppWithEnvVolumesAndPowerButton") else { return }
        let (qemu, kernel, mkfs) = found
        let dir = try TestSupport.tempDir("boot")
        defer {
            if env["HYPEMAN_BOOT_KEEP"] == nil { try? FileManager.default.removeItem(atPath: dir) } else { print("kept \(dir)") }
        }
        let compression = InitramfsCompression(rawValue: env["HYPEMAN_INITRAMFS_COMPRESSION"] ?? "gzip") ?? .gzip

        // 1. initramfs (timed; built fresh in this temp dir).
        let t0 = Date()
        let initramfs = try InitramfsBuilder(kernel: kernel, compression: compression).build(outputDirectory: dir + "/initrd")
        let buildSeconds = Date().timeIntervalSince(t0)
        let initramfsSize = (try FileManager.default.attributesOfItem(atPath: initramfs.path)[.size] as? Int) ?? 0
        #expect(initramfs.built)

        // 2. image rootfs: only /bin/busybox (no /bin/sh and no applet links), /realwork with an
        //    absolute symlink /work -> /realwork as the working directory.
        let rootfs = dir + "/rootfs"
        let fm = FileManager.default
        try fm.createDirectory(atPath: rootfs + "/bin", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: rootfs + "/realwork", withIntermediateDirectories: true)
        try fm.copyItem(atPath: "/bin/busybox", toPath: rootfs + "/bin/busybox")
        try fm.createSymbolicLink(atPath: rootfs + "/work", withDestinationPath: "/realwork")
        try TestSupport.write("lower layer\n", to: rootfs + "/etc/image-file")
        try mkext4(mkfs, rootfs, dir + "/rootfs.ext4", "32M")
        try mkext4(mkfs, nil, dir + "/overlay.ext4", "64M")
        try mkext4(mkfs, nil, dir + "/vol-rw.ext4", "16M")
        let volBase = dir + "/volbase"
        try TestSupport.write("from the base volume\n", to: volBase + "/base.txt")
        try mkext4(mkfs, volBase, dir + "/vol-base.ext4", "16M")
        try mkext4(mkfs, nil, dir + "/vol-ov.ext4", "16M")

        // 3. config disk. The app is busybox's sh started through PATH lookup inside the image.
        let script = """
        echo \(Self.marker) start
        echo "ARGS=[$#] [$0] [$1]"
        echo "PWD-OUT=$(pwd)"
        printf 'TRICKY-HEX=%s\\n' "$(printf '%s' "$TRICKY" | busybox xxd -p | busybox tr -d '\\n')"
        echo "SPACEY=[$SPACEY]"
        echo "FOO=[$FOO]"
        echo "PATH-OUT=[$PATH] HOME-OUT=[$HOME]"
        echo "LEAKED=[${GUEST_IP}${ENTRYPOINT}${VOLUME_MOUNTS}${TERM}]"
        echo data > /mnt/data/written && echo "VOL-RW=[$(busybox cat /mnt/data/written)] $(busybox ls /mnt/data | busybox tr '\\n' ' ')"
        echo "VOL-OV=[$(busybox cat /mnt/ov/base.txt)]"
        echo over > /mnt/ov/new.txt && echo "VOL-OV-WRITE=[$(busybox cat /mnt/ov/new.txt)]"
        echo "IMAGE-FILE=[$(busybox cat /etc/image-file)] RESOLV=[$(busybox cat /etc/resolv.conf)] HOST=[$(busybox hostname)]"
        echo "NET=[$(busybox ip -4 addr show eth0 | busybox awk '/inet /{print $2}')]"
        echo \(Self.marker) end
        """
        let config = GuestConfig(
            instanceID: "bootcheck1", instanceName: "boot-check", image: "test/busybox:latest",
            entrypoint: ["busybox", "sh", "-c", script], cmd: ["first arg", "it's \"second\""],
            workdir: "/work",
            imageEnv: ["PATH=/bin:/usr/bin", "FOO=image"],
            env: ["FOO": "instance", "TRICKY": trickyValue, "SPACEY": "a  b \"c\" 'd'"],
            network: .init(ip: "10.0.2.15", prefixLength: 24, gateway: "10.0.2.2", dns: "10.0.2.3"),
            volumes: [.init(device: "vdd", mountPath: "/mnt/data", mode: .readWrite),
                      .init(device: "vde", mountPath: "/mnt/ov", mode: .overlay, overlayDevice: "vdf")])
        try ConfigDisk.build(config, at: dir + "/config.ext4")

        // 4. boot. The monitor on stdin lets the test press the power button.
        let guest = try QEMUGuest(qemu: qemu, kernel: kernel, initramfs: initramfs.path, dir: dir,
                                  disks: [("rootfs.ext4", true), ("overlay.ext4", false), ("config.ext4", true),
                                          ("vol-rw.ext4", false), ("vol-base.ext4", true), ("vol-ov.ext4", false)],
                                  network: true)
        defer { guest.kill() }
        let serial = guest.serial
        let waitFor = guest.waitFor
        let launched = waitFor("hypeman-init: launching busybox sh -c", 30)
        let exited = waitFor("hypeman-init: app exited with code", 30)
        let out = serial()
        #expect(launched != nil, "no launch marker within 30 s:\n\(out)")
        #expect(exited != nil, "app did not finish within 30 s:\n\(out)")
        #expect(out.contains("hypeman-init: app exited with code 0"), "\(out)")
        #expect(out.contains("\(Self.marker) start") && out.contains("\(Self.marker) end"), "\(out)")
        #expect(out.contains("ARGS=[1] [first arg] [it's \"second\"]"), "\(out)")
        #expect(out.contains("PWD-OUT=/realwork\n"), "\(out)")
        let hex = Array(trickyValue.utf8).map { String(format: "%02x", $0) }.joined()
        #expect(out.contains("TRICKY-HEX=\(hex)\n"), "TRICKY did not arrive byte-exact:\n\(out)")
        #expect(out.contains("SPACEY=[a  b \"c\" 'd']"), "\(out)")
        #expect(out.contains("FOO=[instance]"), "\(out)")
        #expect(out.contains("PATH-OUT=[/bin:/usr/bin] HOME-OUT=[/root]"), "\(out)")
        #expect(out.contains("LEAKED=[]"), "init variables leaked into the app env:\n\(out)")
        #expect(out.contains("VOL-RW=[data] lost+found written"), "\(out)")
        #expect(out.contains("VOL-OV=[from the base volume]") && out.contains("VOL-OV-WRITE=[over]"), "\(out)")
        #expect(out.contains("IMAGE-FILE=[lower layer] RESOLV=[nameserver 10.0.2.3] HOST=[boot-check]"), "\(out)")
        #expect(out.contains("NET=[10.0.2.15/24]"), "\(out)")

        // 5. ACPI power button: the handler stops everything and powers off, so QEMU exits.
        let powerOff = guest.powerButton(wait: 30)
        #expect(powerOff != nil, "guest did not power off within 30 s of system_powerdown:\n\(serial())")
        #expect(serial().contains("hypeman-init: powering off"), "\(serial())")

        print(String(format: "MEASURE guest boot (TCG, %@ initramfs): build %.2f s, size %d bytes (%d modules), "
            + "app launched at %.2f s, app exited at %.2f s, power button -> qemu exit %.2f s",
            compression.rawValue, buildSeconds, initramfsSize, initramfs.modules.load.count,
            launched ?? -1, exited ?? -1, powerOff ?? -1))
    }

    func mkext4(_ mkfs: String, _ content: String?, _ path: String, _ size: String) throws {
        var args = ["-q", "-F", "-t", "ext4", "-E", "root_owner=0:0"]
        if let content { args += ["-d", content] }
        let r = try TestSupport.run(mkfs, args + [path, size])
        #expect(r.status == 0, "mkfs.ext4 \(path): \(r.output)")
    }

    /// Setup failures and app failures leave PID 1 alive with a log line; nothing panics.
    @Test(.timeLimit(.minutes(3))) func missingProgramIsReportedAndInitStaysUp() throws {
        guard let found = BootPrerequisites.find(test: "missingProgramIsReportedAndInitStaysUp") else { return }
        let (qemu, kernel, mkfs) = found
        let dir = try TestSupport.tempDir("boot-fail")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let initramfs = try InitramfsBuilder(kernel: kernel).build(outputDirectory: dir + "/initrd")
        try TestSupport.write("x\n", to: dir + "/rootfs/etc/hostname")
        try mkext4(mkfs, dir + "/rootfs", dir + "/rootfs.ext4", "8M")
        try mkext4(mkfs, nil, dir + "/overlay.ext4", "16M")
        try ConfigDisk.build(GuestConfig(instanceID: "bootfail1", instanceName: "boot-fail", image: "test/empty",
                                         entrypoint: ["/no/such/program"], cmd: ["arg"]), at: dir + "/config.ext4")
        let guest = try QEMUGuest(qemu: qemu, kernel: kernel, initramfs: initramfs.path, dir: dir,
                                  disks: [("rootfs.ext4", true), ("overlay.ext4", false), ("config.ext4", true)], network: false)
        defer { guest.kill() }
        let exited = guest.waitFor("hypeman-init: app exited with code", 30)
        #expect(exited != nil, "no exit line within 30 s:\n\(guest.serial())")
        usleep(1_000_000)
        let out = guest.serial()
        #expect(out.contains("hypeman-init: launching /no/such/program arg"), "\(out)")
        #expect(out.contains("hypeman-init: app exited with code 127"), "\(out)")
        #expect(guest.isRunning, "the VM must stay up after the app exits:\n\(out)")
        #expect(!out.contains("Kernel panic"), "\(out)")
        #expect(guest.powerButton(wait: 30) != nil, "no power-off after the app exited:\n\(guest.serial())")
    }
}

/// qemu, a prepared kernel, busybox-static and mkfs.ext4, or a printed reason to skip.
enum BootPrerequisites {
    static func find(test: String) -> (String, KernelFiles, String)? {
        guard let qemu = TestSupport.which("qemu-system-x86_64") else {
            print("SKIP \(test): qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
            return nil
        }
        // $HYPEMAN_KERNEL_DIR, else the test default, else where scripts/run.sh puts it.
        let candidates = ProcessInfo.processInfo.environment["HYPEMAN_KERNEL_DIR"].map { [$0] }
            ?? ["/var/tmp/hypeman-kernel", "/var/lib/hypeman-kernel"]
        var found: KernelFiles?
        var problems: [String] = []
        for dir in candidates {
            do { found = try KernelLocator(kernelDirectory: dir).locate(); break } catch { problems.append("\(error)") }
        }
        guard let kernel = found else {
            print("SKIP \(test): no guest kernel (\(problems.joined(separator: "; "))); "
                + "run scripts/setup-guest-kernel.sh /var/tmp/hypeman-kernel or set HYPEMAN_KERNEL_DIR")
            return nil
        }
        guard FileManager.default.isExecutableFile(atPath: "/bin/busybox"), let mkfs = TestSupport.which("mkfs.ext4") else {
            print("SKIP \(test): needs /bin/busybox (busybox-static) and mkfs.ext4 (e2fsprogs)")
            return nil
        }
        return (qemu, kernel, mkfs)
    }
}

/// One QEMU microvm under TCG with the serial port in a file and the monitor on stdin.
final class QEMUGuest {
    let process = Process()
    let monitor = Pipe()
    let log: String
    let errLog: String
    let start: Date

    init(qemu: String, kernel: KernelFiles, initramfs: String, dir: String, disks: [(String, Bool)], network: Bool) throws {
        log = dir + "/serial.log"
        errLog = dir + "/qemu.err"
        var args = ["-accel", "tcg", "-M", "microvm", "-cpu", "qemu64", "-m", "256", "-smp", "1",
                    "-nodefaults", "-no-user-config", "-nographic", "-monitor", "stdio", "-serial", "file:" + log,
                    "-kernel", kernel.vmlinuxPath, "-initrd", initramfs,
                    "-append", GuestKernelCommandLine.make(tscKHz: GuestKernelCommandLine.hostTSCKHz())]
        for (i, (file, ro)) in disks.enumerated() {
            args += ["-drive", "id=d\(i),file=\(dir)/\(file),format=raw,if=none" + (ro ? ",readonly=on" : ""),
                     "-device", "virtio-blk-device,drive=d\(i)"]
        }
        if network {   // user-mode networking with restrict=on: the guest reaches nothing outside
            args += ["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-device,netdev=n0"]
        }
        process.executableURL = URL(fileURLWithPath: qemu)
        process.arguments = args
        process.standardInput = monitor
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        _ = FileManager.default.createFile(atPath: errLog, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: errLog)
        start = Date()
        try process.run()
    }

    var isRunning: Bool { process.isRunning }

    /// The serial log with CRLF folded, plus QEMU's stderr once it has exited.
    func serial() -> String {
        let fm = FileManager.default
        let text = String(decoding: fm.contents(atPath: log) ?? Data(), as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
        if process.isRunning { return text }
        return text + "\n[qemu exited: " + String(decoding: fm.contents(atPath: errLog) ?? Data(), as: UTF8.self) + "]"
    }

    /// Seconds since QEMU started when `needle` appeared, or nil after `seconds`.
    func waitFor(_ needle: String, _ seconds: Double) -> Double? {
        while Date().timeIntervalSince(start) < seconds {
            if serial().contains(needle) { return Date().timeIntervalSince(start) }
            if !process.isRunning { return serial().contains(needle) ? Date().timeIntervalSince(start) : nil }
            usleep(20_000)
        }
        return nil
    }

    /// `system_powerdown` on the monitor; seconds until QEMU exited, or nil.
    func powerButton(wait seconds: Double) -> Double? {
        let pressed = Date()
        monitor.fileHandleForWriting.write(Data("system_powerdown\n".utf8))
        while process.isRunning && Date().timeIntervalSince(pressed) < seconds { usleep(50_000) }
        return process.isRunning ? nil : Date().timeIntervalSince(pressed)
    }

    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}
