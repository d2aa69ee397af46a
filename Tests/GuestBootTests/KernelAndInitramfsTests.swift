import Foundation
import Testing
@testable import GuestBoot

@Suite struct KernelLocatorTests {
    @Test func errorsNameTheSetupScript() throws {
        let dir = try TestSupport.tempDir("kloc")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for probe in [dir + "/absent", dir] {
            do {
                _ = try KernelLocator(kernelDirectory: probe).locate()
                Issue.record("locate() must fail for \(probe)")
            } catch let e as GuestBootError {
                #expect("\(e)".contains("scripts/setup-guest-kernel.sh"), "\(e)")
            }
        }
        try FileManager.default.createDirectory(atPath: dir + "/6.1.0-1-amd64/modules", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/current", withDestinationPath: "6.1.0-1-amd64")
        try TestSupport.write("not an elf", to: dir + "/6.1.0-1-amd64/vmlinux")
        #expect(throws: GuestBootError.self) { try KernelLocator(kernelDirectory: dir).locate() }
        try TestSupport.write("\u{7f}ELF rest", to: dir + "/6.1.0-1-amd64/vmlinux")
        #expect(throws: GuestBootError.self) { try KernelLocator(kernelDirectory: dir).locate() }   // no modules.dep
        try TestSupport.write("", to: dir + "/6.1.0-1-amd64/modules/modules.dep")
        let k = try KernelLocator(kernelDirectory: dir).locate()
        #expect(k.version == "6.1.0-1-amd64")
        #expect(k.vmlinuxPath == dir + "/6.1.0-1-amd64/vmlinux")
        #expect(k.modulesDirectory == dir + "/6.1.0-1-amd64/modules")
        #expect(KernelLocator(dataDirectory: "/var/lib/hypeman/").kernelDirectory == "/var/lib/hypeman/system/kernel")
    }
}

@Suite struct InitramfsBuilderTests {
    /// A fake kernel directory whose "modules" are small files.
    func fakeKernel(_ dir: String) throws -> KernelFiles {
        let mods = dir + "/k/modules"
        let dep = """
        kernel/drivers/virtio/virtio_ring.ko:
        kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
        kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
        kernel/fs/jbd2/jbd2.ko:
        kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko
        kernel/fs/overlayfs/overlay.ko:
        """
        try TestSupport.write(dep, to: mods + "/modules.dep")
        try TestSupport.write("kernel/drivers/virtio/virtio_mmio.ko\n", to: mods + "/modules.builtin")
        for line in dep.split(separator: "\n") {
            let path = String(line.split(separator: ":")[0])
            try TestSupport.write("module " + path, to: mods + "/" + path)
        }
        try TestSupport.write("\u{7f}ELF", to: dir + "/k/vmlinux")
        return KernelFiles(version: "test", directory: dir + "/k", vmlinuxPath: dir + "/k/vmlinux", modulesDirectory: mods)
    }

    @Test func buildsOncePerInputHash() throws {
        guard FileManager.default.isExecutableFile(atPath: "/bin/busybox"), let cpio = TestSupport.which("cpio") else {
            print("SKIP buildsOncePerInputHash: needs /bin/busybox (busybox-static) and cpio")
            return
        }
        let dir = try TestSupport.tempDir("initramfs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let kernel = try fakeKernel(dir)
        let out = dir + "/out"
        let builder = InitramfsBuilder(kernel: kernel)
        let first = try builder.build(outputDirectory: out)
        #expect(first.built)
        #expect(first.path == out + "/initramfs-\(first.hash).cpio.gz")
        #expect(first.hash.count == 16 && first.hash.allSatisfy(\.isHexDigit))
        #expect(first.modules.load.map(\.name) == ["virtio_ring", "virtio", "virtio_blk", "jbd2", "ext4", "overlay"])
        #expect(first.modules.builtin == ["virtio_mmio"])
        let again = try builder.build(outputDirectory: out)
        #expect(!again.built && again.path == first.path)

        // Contents: gunzip | cpio -t, and the module list in load order.
        let raw = try TestSupport.run("/bin/sh", ["-c", "gzip -dc '\(first.path)' | \(cpio) -t --quiet"])
        let names = Set(raw.output.split(separator: "\n").map(String.init))
        for n in ["init", "bin/busybox", "bin/sh", "bin/nsenter", "dev/console", "dev/null", "etc/hypeman/modules",
                  "etc/acpi/PWRF/00000080", "lib/modules/kernel/fs/ext4/ext4.ko", "newroot"] {
            #expect(names.contains(n), "missing \(n)")
        }
        let list = try TestSupport.run("/bin/sh", ["-c", "gzip -dc '\(first.path)' | \(cpio) -i --quiet --to-stdout etc/hypeman/modules"])
        #expect(list.output == first.modules.load.map { $0.relativePath + "\n" }.joined())
        let initText = try TestSupport.run("/bin/sh", ["-c", "gzip -dc '\(first.path)' | \(cpio) -i --quiet --to-stdout init"])
        #expect(initText.output == InitScript.text)

        // Any input change gives a new file; uncompressed output is a plain newc archive.
        try TestSupport.write("module changed", to: kernel.modulesDirectory + "/kernel/fs/ext4/ext4.ko")
        let changed = try builder.build(outputDirectory: out)
        #expect(changed.built && changed.hash != first.hash)
        var plain = builder
        plain.compression = .none
        let p = try plain.build(outputDirectory: out)
        #expect(p.path.hasSuffix(".cpio") && p.hash != changed.hash)
        #expect(FileManager.default.contents(atPath: p.path).map { [UInt8]($0.prefix(6)) } == Array("070701".utf8))
        #expect(try plain.archive() == [UInt8](FileManager.default.contents(atPath: p.path) ?? Data()))
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasPrefix(".") }.isEmpty)
    }

    @Test func requiresStaticBusyboxAndRequiredModules() throws {
        let dir = try TestSupport.tempDir("initramfs-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let kernel = try fakeKernel(dir)
        if let ls = TestSupport.which("ls") {   // dynamically linked on Debian
            let b = InitramfsBuilder(kernel: kernel, busyboxPath: ls)
            #expect(throws: GuestBootError.self) { try b.build(outputDirectory: dir + "/out") }
        }
        try FileManager.default.removeItem(atPath: kernel.modulesDirectory + "/kernel/fs/overlayfs/overlay.ko")
        try TestSupport.write("kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/fs/jbd2/jbd2.ko:\n",
                              to: kernel.modulesDirectory + "/modules.dep")
        if FileManager.default.isExecutableFile(atPath: "/bin/busybox") {
            #expect(throws: GuestBootError.self) { try InitramfsBuilder(kernel: kernel).build(outputDirectory: dir + "/out") }
        }
    }
}

@Suite struct InitScriptTests {
    @Test func parsesWithBusyboxSh() throws {
        guard FileManager.default.isExecutableFile(atPath: "/bin/busybox") else {
            print("SKIP parsesWithBusyboxSh: /bin/busybox missing"); return
        }
        let dir = try TestSupport.tempDir("initsh")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try TestSupport.write(InitScript.text, to: dir + "/init")
        try TestSupport.write(InitScript.powerButtonHandler, to: dir + "/pwr")
        for f in ["init", "pwr"] {
            let r = try TestSupport.run("/bin/busybox", ["sh", "-n", dir + "/" + f])
            #expect(r.status == 0, "\(f): \(r.output)")
        }
        #expect(InitScript.text.hasPrefix("#!/bin/sh\n"))
        #expect(InitScript.text.contains("hypeman-init: launching"))
        #expect(InitScript.text.contains("app exited with code"))
    }

    /// in_root follows symlinks as if the root were `/`, so a mount or workdir cannot escape it.
    @Test func inRootConfinesSymlinks() throws {
        guard FileManager.default.isExecutableFile(atPath: "/bin/busybox") else {
            print("SKIP inRootConfinesSymlinks: /bin/busybox missing"); return
        }
        let root = try TestSupport.tempDir("inroot")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/real/sub", withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: root + "/abs", withDestinationPath: "/real")       // absolute, inside root
        try fm.createSymbolicLink(atPath: root + "/rel", withDestinationPath: "real/sub")
        try fm.createSymbolicLink(atPath: root + "/escape", withDestinationPath: "../../../../etc")
        try fm.createSymbolicLink(atPath: root + "/loop", withDestinationPath: "loop")
        let cases: [(String, String?)] = [
            ("/", "/"), ("/abs", "/real"), ("/abs/sub/new/dir", "/real/sub/new/dir"), ("/rel/../x", "/real/x"),
            ("//abs/./sub/", "/real/sub"), ("/escape/passwd", "/etc/passwd"), ("/loop", nil), ("/none/a", "/none/a"),
        ]
        for (input, want) in cases {
            let r = try TestSupport.run("/bin/busybox", ["sh", "-c", "PATH=/bin:/usr/bin\n" + InitScript.functions + "\nin_root \"$1\" \"$2\"",
                                                         "sh", root, input])
            if let want {
                #expect(r.status == 0 && r.output == want + "\n", "\(input) -> \(r.output)")
            } else {
                #expect(r.status != 0, "\(input) must fail, got \(r.output)")
            }
        }
    }
}

@Suite struct KernelCommandLineTests {
    @Test func buildsCommandLine() {
        #expect(GuestKernelCommandLine.make() == "console=ttyS0 reboot=t panic=-1 quiet")
        #expect(GuestKernelCommandLine.make(quiet: false, tscKHz: 2_793_436, extra: ["nokaslr"])
            == "console=ttyS0 reboot=t panic=-1 tsc_early_khz=2793436 nokaslr")
    }

    @Test func readsHostTSCFromCpuinfo() {
        let info = """
        processor\t: 0
        model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz
        cpu MHz\t\t: 2793.436
        flags\t\t: fpu vme tsc constant_tsc nonstop_tsc

        processor\t: 1
        cpu MHz\t\t: 1200.000
        """
        #expect(GuestKernelCommandLine.hostTSCKHz(cpuinfo: info) == 2_793_436)
        #expect(GuestKernelCommandLine.hostTSCKHz(cpuinfo: info.replacingOccurrences(of: " constant_tsc", with: "")) == nil)
        #expect(GuestKernelCommandLine.hostTSCKHz(cpuinfo: "flags : constant_tsc\n") == nil)
    }
}
