import Foundation
import Glibc
import VMM
@testable import QEMUDriver

/// Files and helpers for real-QEMU tests: a scratch directory with a short path (QMP socket paths
/// must fit `sun_path`), a do-nothing multiboot kernel, and a busybox initramfs for real kernels.
struct TestGuest {
    let dir: String

    init(_ name: String) throws {
        dir = "/tmp/hmq-\(name)-\(getpid())-\(UInt16.random(in: 0...UInt16.max))"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir + "/run", withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }

    /// A VMSpec rooted in this directory (256 MiB, one vCPU, TCG).
    func spec(kernel: String, initramfs: String = "", cmdline: String = "", hotplug: Int64 = 0, disks: [DiskSpec] = []) -> VMSpec {
        VMSpec(instanceID: "t-" + (dir as NSString).lastPathComponent, vcpus: 1, memoryBytes: 256 << 20, hotplugBytes: hotplug,
               kernelPath: kernel, initramfsPath: initramfs, cmdline: cmdline, disks: disks, net: nil,
               serialLogPath: dir + "/app.log", vmmLogPath: dir + "/vmm.log", runDir: dir + "/run", vsockCID: 3, accel: "tcg")
    }

    /// A sparse raw image of `size` bytes.
    func disk(_ name: String, size: Int64 = 16 << 20) throws -> String {
        let path = dir + "/" + name
        FileManager.default.createFile(atPath: path, contents: nil)
        guard truncate(path, off_t(size)) == 0 else { throw POSIXError(.EIO) }
        return path
    }

    /// A 4 KiB multiboot image whose code halts the CPU forever (`cli; hlt; jmp`): QEMU accepts it
    /// as `-kernel`, so the whole process/QMP lifecycle can be exercised without a Linux guest.
    func haltingKernel() throws -> String {
        let magic: UInt32 = 0x1BAD_B002, flags: UInt32 = 0x0001_0000, base: UInt32 = 0x10_0000
        let header: [UInt32] = [magic, flags, 0 &- (magic &+ flags), base, base, 0, 0, base + 32]
        var bytes: [UInt8] = header.flatMap { v in (0..<4).map { UInt8((v >> (8 * $0)) & 0xff) } }
        bytes += [0xfa, 0xf4, 0xeb, 0xfd]
        bytes += [UInt8](repeating: 0, count: 4096 - bytes.count)
        let path = dir + "/halt.mb"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The test init: loads the virtio modules it finds, prints `HM-TEST-BOOTED`, then once a
    /// second `hm-tick <n> mem=<MemTotal kB> disks=<block devices>` on the serial console.
    static let initScript = """
    #!/bin/busybox sh
    /bin/busybox --install -s /bin
    export PATH=/bin
    mount -t proc proc /proc
    mount -t sysfs sys /sys
    mount -t devtmpfs dev /dev
    for m in $(cat /mod/order); do insmod /mod/$m.ko 2>/dev/null; done
    echo HM-TEST-BOOTED
    i=0
    while true; do
      i=$((i+1))
      echo "hm-tick $i mem=$(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) disks=$(ls /sys/block | tr '\\n' ',')"
      sleep 1
    done

    """

    static let moduleOrder = ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
                              "virtio_blk", "virtio_mem"]

    /// Builds an uncompressed newc initramfs: static busybox, the init above, and those of
    /// `moduleOrder` found (as plain `.ko`) under `modulesDir`.
    func initramfs(modulesDir: String) throws -> String {
        var cpio = NewcWriter()
        for d in ["bin", "proc", "sys", "dev", "mod"] { cpio.directory(d) }
        cpio.device("dev/console", major: 5, minor: 1)
        guard let busybox = FileManager.default.contents(atPath: "/bin/busybox") else { throw POSIXError(.ENOENT) }
        cpio.file("bin/busybox", Array(busybox), mode: 0o755)
        cpio.file("init", Array(Self.initScript.utf8), mode: 0o755)
        var found: [String: String] = [:]
        if let e = FileManager.default.enumerator(atPath: modulesDir) {
            for case let rel as String in e where rel.hasSuffix(".ko") {
                let name = ((rel as NSString).lastPathComponent as NSString).deletingPathExtension
                if Self.moduleOrder.contains(name) { found[name] = modulesDir + "/" + rel }
            }
        }
        var order: [String] = []
        for m in Self.moduleOrder {
            guard let p = found[m], let data = FileManager.default.contents(atPath: p) else { continue }
            cpio.file("mod/\(m).ko", Array(data), mode: 0o644)
            order.append(m)
        }
        cpio.file("mod/order", Array((order.joined(separator: "\n") + "\n").utf8), mode: 0o644)
        let path = dir + "/initramfs.cpio"
        try Data(cpio.finish()).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The serial log so far.
    var serial: String {
        String(decoding: FileManager.default.contents(atPath: dir + "/app.log") ?? Data(), as: UTF8.self)
    }

    /// Waits until the serial log satisfies `condition`; false on timeout.
    func waitSerial(timeout: Double, _ condition: (String) -> Bool) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if condition(serial) { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return condition(serial)
    }

    /// The `hm-tick` lines of the serial log as (n, mem kB, disks).
    var ticks: [(n: Int, mem: Int, disks: String)] {
        serial.split(whereSeparator: \.isNewline).compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count >= 4, parts[0] == "hm-tick", let n = Int(parts[1]),
                  parts[2].hasPrefix("mem="), let mem = Int(parts[2].dropFirst(4)) else { return nil }
            return (n, mem, String(parts[3].dropFirst(6)))
        }
    }
}

/// The kernel directory prepared by scripts/setup-guest-kernel.sh, from `HYPEMAN_KERNEL_DIR`
/// (`current/vmlinux`, `current/modules`); nil with the reason when it is not there.
func guestKernel() -> (vmlinux: String, modules: String)? {
    guard let dir = ProcessInfo.processInfo.environment["HYPEMAN_KERNEL_DIR"], !dir.isEmpty else { return nil }
    let vmlinux = dir + "/current/vmlinux"
    guard FileManager.default.fileExists(atPath: vmlinux) else { return nil }
    return (vmlinux, dir + "/current/modules")
}

/// Writes a cpio archive in the "newc" format the kernel unpacks as initramfs.
struct NewcWriter {
    private var out: [UInt8] = []
    private var ino: UInt32 = 1

    mutating func directory(_ name: String) { entry(name, mode: 0o040755, data: []) }
    mutating func file(_ name: String, _ data: [UInt8], mode: UInt32) { entry(name, mode: 0o100000 | mode, data: data) }
    mutating func device(_ name: String, major: UInt32, minor: UInt32) {
        entry(name, mode: 0o020600, data: [], rdev: (major, minor))
    }

    mutating func finish() -> [UInt8] {
        entry("TRAILER!!!", mode: 0, data: [], nlink: 1)
        return out
    }

    private mutating func entry(_ name: String, mode: UInt32, data: [UInt8], rdev: (UInt32, UInt32) = (0, 0), nlink: UInt32? = nil) {
        let fields: [UInt32] = [ino, mode, 0, 0, nlink ?? (mode & 0o040000 != 0 ? 2 : 1), 0, UInt32(data.count), 0, 0,
                                rdev.0, rdev.1, UInt32(name.utf8.count + 1), 0]
        ino += 1
        var header = "070701"
        for f in fields {
            let h = String(f, radix: 16, uppercase: true)
            header += String(repeating: "0", count: 8 - h.count) + h
        }
        out += Array(header.utf8) + Array(name.utf8) + [0]
        pad()
        out += data
        pad()
    }

    private mutating func pad() { while out.count % 4 != 0 { out.append(0) } }
}
