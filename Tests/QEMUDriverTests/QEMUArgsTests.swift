import Testing
import VMM
@testable import QEMUDriver

@Suite struct QEMUArgsTests {
    static let mib: Int64 = 1 << 20

    static func spec(hotplug: Int64 = 512 << 20, net: Bool = true, accel: String = "tcg",
                     disks: [DiskSpec]? = nil, cmdline: String = "console=ttyS0 root=/dev/vda") -> VMSpec {
        VMSpec(instanceID: "inst1", vcpus: 2, memoryBytes: 256 << 20, hotplugBytes: hotplug,
               kernelPath: "/k/vmlinux", initramfsPath: "/k/initrd", cmdline: cmdline,
               disks: disks ?? [DiskSpec(id: "rootfs", path: "/d/rootfs.erofs", readonly: true),
                                DiskSpec(id: "overlay", path: "/d/overlay.raw", readonly: false),
                                DiskSpec(id: "config", path: "/d/config.raw", readonly: true)],
               net: net ? NetSpec(tap: "hm-abc", mac: "02:00:00:00:00:01", ip: "10.0.0.2", mask: "255.255.255.0") : nil,
               serialLogPath: "/g/logs/app.log", vmmLogPath: "/g/logs/vmm.log", runDir: "/run/hm/inst1",
               vsockCID: 7, accel: accel)
    }

    /// The argv, or [] when `build` refused the spec (every expectation on it then fails).
    static func build(_ spec: VMSpec, _ options: QEMUOptions = QEMUOptions(), incoming: String? = nil) -> [String] {
        (try? QEMUArgs.build(spec, layout: QEMULayout.initial(for: spec, options: options), options: options, incoming: incoming)) ?? []
    }

    /// The value after each occurrence of `flag`.
    static func values(_ argv: [String], _ flag: String) -> [String] {
        var out: [String] = []
        for (i, a) in argv.enumerated() where a == flag && i + 1 < argv.count { out.append(argv[i + 1]) }
        return out
    }

    @Test func basicMachineAndControlFlags() {
        let a = Self.build(Self.spec())
        #expect(Self.values(a, "-accel") == ["tcg"])
        #expect(Self.values(a, "-M") == ["q35"])
        #expect(Self.values(a, "-cpu") == ["qemu64"])
        #expect(Self.values(a, "-smp") == ["2"])
        #expect(Self.values(a, "-name") == ["guest=inst1"])
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-S"] {
            #expect(a.filter { $0 == flag }.count == 1, "\(flag) exactly once")
        }
        #expect(!a.contains("-no-shutdown"), "a guest power-off must end QEMU")
        #expect(Self.values(a, "-pidfile") == ["/run/hm/inst1/qemu.pid"])
        #expect(Self.values(a, "-qmp") == ["unix:/run/hm/inst1/qmp.sock,server=on,wait=off"])
        #expect(Self.values(a, "-chardev") == ["file,id=hm-ser0,path=/g/logs/app.log,append=on",
                                               "socket,id=hm-agent,path=/run/hm/inst1/agent.sock,server=on,wait=off"])
        // The guest agent's virtio-serial port, named as the agent looks for it, at a fixed slot.
        #expect(Self.values(a, "-device").contains("virtio-serial-pci,id=hm-vser0,bus=pcie.0,addr=0x5,max_ports=2"))
        #expect(Self.values(a, "-device").contains("virtserialport,bus=hm-vser0.0,chardev=hm-agent,name=hypeman.agent"))
        #expect(Self.values(a, "-serial") == ["chardev:hm-ser0"])
        #expect(Self.values(a, "-kernel") == ["/k/vmlinux"])
        #expect(Self.values(a, "-initrd") == ["/k/initrd"])
        #expect(!a.contains("-incoming"))
    }

    @Test func cpuFollowsAccelUnlessOverridden() {
        #expect(Self.values(Self.build(Self.spec(accel: "kvm")), "-cpu") == ["host"])
        #expect(Self.values(Self.build(Self.spec(accel: "kvm")), "-accel") == ["kvm"])
        #expect(Self.values(Self.build(Self.spec(accel: "kvm"), QEMUOptions(cpuModel: "host,-arch-capabilities")), "-cpu")
                == ["host,-arch-capabilities"])
        #expect(QEMUArgs.cpuModel(accel: "tcg", options: QEMUOptions()) == "qemu64")
    }

    @Test func virtioMemWhenHotplugMemoryIsAsked() {
        let a = Self.build(Self.spec(hotplug: 512 << 20))
        #expect(Self.values(a, "-m") == ["268435456B,maxmem=805306368B"])
        #expect(Self.values(a, "-object") == ["memory-backend-ram,id=hm-vmem-ram,size=536870912"])
        #expect(Self.values(a, "-device").contains("virtio-mem-pci,id=hm-vmem,memdev=hm-vmem-ram,requested-size=0,bus=pcie.0,addr=0x2"))
        #expect(Self.values(a, "-append") == ["console=ttyS0 root=/dev/vda memhp_default_state=online"])
    }

    @Test func hotplugSizeIsRoundedToTheVirtioMemBlock() {
        let a = Self.build(Self.spec(hotplug: 100 * Self.mib + 12345))
        #expect(Self.values(a, "-object") == ["memory-backend-ram,id=hm-vmem-ram,size=\(100 * Self.mib)"])
        #expect(Self.values(a, "-m") == ["268435456B,maxmem=\(256 * Self.mib + 100 * Self.mib)B"])
        // Below one block there is nothing to plug.
        #expect(QEMUArgs.hotplugBytes(Self.spec(hotplug: Self.mib), machine: .q35) == 0)
    }

    @Test func noHotplugMeansPlainMemoryAndUntouchedCmdline() {
        let a = Self.build(Self.spec(hotplug: 0))
        #expect(Self.values(a, "-m") == ["268435456B"])
        #expect(Self.values(a, "-object").isEmpty)
        #expect(!a.contains { $0.hasPrefix("virtio-mem") })
        #expect(Self.values(a, "-append") == ["console=ttyS0 root=/dev/vda"])
        // An explicit memhp setting is respected.
        let b = Self.build(Self.spec(cmdline: "console=ttyS0 memhp_default_state=online_movable"))
        #expect(Self.values(b, "-append") == ["console=ttyS0 memhp_default_state=online_movable"])
    }

    @Test func disksSitOnTheirOwnRootPortsInSpecOrderWithReadonlyHonoured() {
        let a = Self.build(Self.spec())
        let devices = Self.values(a, "-device")
        let ports = devices.filter { $0.hasPrefix("pcie-root-port,") }
        #expect(ports.count == 3 + 8)
        #expect(ports[0] == "pcie-root-port,id=hm-rp0,bus=pcie.0,chassis=1,addr=0x8.0,multifunction=on")
        #expect(ports[1] == "pcie-root-port,id=hm-rp1,bus=pcie.0,chassis=2,addr=0x8.1")
        #expect(ports[9] == "pcie-root-port,id=hm-rp9,bus=pcie.0,chassis=10,addr=0x9.1")
        #expect(Self.values(a, "-blockdev") == [
            "driver=file,node-name=f-rootfs,filename=/d/rootfs.erofs,read-only=on",
            "driver=raw,node-name=d-rootfs,file=f-rootfs,read-only=on",
            "driver=file,node-name=f-overlay,filename=/d/overlay.raw,read-only=off",
            "driver=raw,node-name=d-overlay,file=f-overlay,read-only=off",
            "driver=file,node-name=f-config,filename=/d/config.raw,read-only=on",
            "driver=raw,node-name=d-config,file=f-config,read-only=on",
        ])
        #expect(devices.filter { $0.hasPrefix("virtio-blk-pci") } == [
            "virtio-blk-pci,id=rootfs,drive=d-rootfs,serial=rootfs,bus=hm-rp0",
            "virtio-blk-pci,id=overlay,drive=d-overlay,serial=overlay,bus=hm-rp1",
            "virtio-blk-pci,id=config,drive=d-config,serial=config,bus=hm-rp2",
        ])
        // Every root port comes before any disk that uses it.
        let lastPort = a.lastIndex { $0.hasPrefix("pcie-root-port,") } ?? 0
        let firstDisk = a.firstIndex { $0.hasPrefix("virtio-blk-pci") } ?? 0
        #expect(lastPort < firstDisk)
    }

    @Test func tapNetworkWithMac() {
        let a = Self.build(Self.spec())
        #expect(Self.values(a, "-netdev") == ["tap,id=hm-net0,ifname=hm-abc,script=no,downscript=no"])
        #expect(Self.values(a, "-device").contains("virtio-net-pci,id=hm-nic0,netdev=hm-net0,mac=02:00:00:00:00:01,bus=pcie.0,addr=0x3,romfile="))
        let b = Self.build(Self.spec(net: false))
        #expect(Self.values(b, "-netdev").isEmpty)
        #expect(!b.contains { $0.hasPrefix("virtio-net") })
    }

    @Test func vsockOnlyWhenTheHostHasVhostVsock() {
        #expect(!Self.build(Self.spec()).contains { $0.contains("vsock") })
        let a = Self.build(Self.spec(), QEMUOptions(vhostVsock: true))
        #expect(Self.values(a, "-device").contains("vhost-vsock-pci,id=hm-vsock0,guest-cid=7,bus=pcie.0,addr=0x4"))
    }

    @Test func microvmUsesMMIODevicesWithoutHotplug() {
        let opts = QEMUOptions(machine: .microvm, vhostVsock: true)
        let a = Self.build(Self.spec(hotplug: 512 << 20), opts)
        #expect(Self.values(a, "-M") == ["microvm"])
        #expect(Self.values(a, "-m") == ["268435456B"])
        #expect(!a.contains { $0.contains("virtio-mem") || $0.contains("pcie-root-port") })
        #expect(Self.values(a, "-append") == ["console=ttyS0 root=/dev/vda"])
        let devices = Self.values(a, "-device")
        #expect(devices.filter { $0.hasPrefix("virtio-blk-device") } == [
            "virtio-blk-device,id=rootfs,drive=d-rootfs,serial=rootfs",
            "virtio-blk-device,id=overlay,drive=d-overlay,serial=overlay",
            "virtio-blk-device,id=config,drive=d-config,serial=config",
        ])
        #expect(devices.contains("virtio-net-device,id=hm-nic0,netdev=hm-net0,mac=02:00:00:00:00:01"))
        #expect(devices.contains("vhost-vsock-device,id=hm-vsock0,guest-cid=7"))
        #expect(QEMUDriver(machine: .microvm, vhostVsock: false).capabilities
                == Capabilities(snapshot: true, memoryResize: false, diskHotplug: false, vsock: false))
        #expect(QEMUDriver(machine: .q35, vhostVsock: true).capabilities
                == Capabilities(snapshot: true, memoryResize: true, diskHotplug: true, vsock: true))
    }

    @Test func commasInPathsAreDoubled() {
        var s = Self.spec(disks: [DiskSpec(id: "vol-a", path: "/d/a,b.raw", readonly: false)])
        s.serialLogPath = "/g/x,y/app.log"
        s.runDir = "/run/a,b"
        let a = Self.build(s)
        #expect(Self.values(a, "-blockdev").first == "driver=file,node-name=f-vol-a,filename=/d/a,,b.raw,read-only=off")
        #expect(Self.values(a, "-chardev") == ["file,id=hm-ser0,path=/g/x,,y/app.log,append=on",
                                               "socket,id=hm-agent,path=/run/a,,b/agent.sock,server=on,wait=off"])
        #expect(Self.values(a, "-qmp") == ["unix:/run/a,,b/qmp.sock,server=on,wait=off"])
        #expect(Self.values(a, "-pidfile") == ["/run/a,b/qemu.pid"])  // a plain argument: no escaping
    }

    @Test func idsAreStableWellFormedAndShortEnoughForNodeNames() {
        #expect(QEMUArgs.deviceID("vol-abc123") == "vol-abc123")
        let odd = ["vol-" + String(repeating: "z", count: 40), "9lives", "vol/with spaces", "vol-é"]
        var seen = Set<String>()
        for id in odd {
            let base = QEMUArgs.deviceID(id)
            #expect(base == QEMUArgs.deviceID(id), "stable")
            #expect(base.first?.isLetter == true)
            #expect(base.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-._".contains($0)) })
            #expect(QEMUArgs.formatNodeName(id).utf8.count <= 31)
            #expect(QEMUArgs.fileNodeName(id).utf8.count <= 31)
            #expect(QEMUArgs.blkSerial(id).utf8.count <= 20)
            seen.insert(base)
        }
        #expect(seen.count == odd.count)
        // Two long ids sharing a prefix still differ.
        let p = String(repeating: "a", count: 30)
        #expect(QEMUArgs.deviceID(p + "1") != QEMUArgs.deviceID(p + "2"))
    }

    @Test func restoreLayoutKeepsHotpluggedDisksOnTheirPorts() throws {
        let spec = Self.spec(disks: [DiskSpec(id: "rootfs", path: "/d/r", readonly: true),
                                     DiskSpec(id: "vol-b", path: "/d/b", readonly: false)])
        // As saved after vol-a (port 1) was removed and vol-b hot-plugged on port 2.
        var layout = QEMULayout(machine: .q35, ports: 9, slots: ["rootfs": 0, "vol-b": 2])
        layout.accommodate(spec)
        #expect(layout.slots == ["rootfs": 0, "vol-b": 2])
        #expect(layout.freePort() == 1)
        let a = try QEMUArgs.build(spec, layout: layout, options: QEMUOptions(), incoming: "defer")
        #expect(Self.values(a, "-device").filter { $0.hasPrefix("pcie-root-port") }.count == 9)
        #expect(Self.values(a, "-device").contains("virtio-blk-pci,id=vol-b,drive=d-vol-b,serial=vol-b,bus=hm-rp2"))
        #expect(Self.values(a, "-incoming") == ["defer"])
        #expect(a.last == "defer")
        // A disk the saved layout does not know takes the lowest free port.
        var l2 = layout
        var s2 = spec
        s2.disks.append(DiskSpec(id: "vol-c", path: "/d/c", readonly: false))
        l2.accommodate(s2)
        #expect(l2.slots["vol-c"] == 1)
    }

    @Test func launchAndRestoreBuildTheSameDevices() throws {
        let spec = Self.spec()
        let layout = QEMULayout.initial(for: spec, options: QEMUOptions())
        let launch = try QEMUArgs.build(spec, layout: layout, options: QEMUOptions())
        let restore = try QEMUArgs.build(spec, layout: layout, options: QEMUOptions(), incoming: "defer")
        #expect(Array(restore.dropLast(2)) == launch)
    }

    @Test func qmpDiskArgumentsMatchTheArgv() {
        let d = DiskSpec(id: "vol-x", path: "/d/x,y.raw", readonly: true)
        #expect(QEMUArgs.fileNodeArguments(d) == ["driver": "file", "node-name": "f-vol-x", "filename": "/d/x,y.raw", "read-only": true])
        #expect(QEMUArgs.formatNodeArguments(d) == ["driver": "raw", "node-name": "d-vol-x", "file": "f-vol-x", "read-only": true])
        #expect(QEMUArgs.deviceArguments(d, port: 4) == ["driver": "virtio-blk-pci", "id": "vol-x", "drive": "d-vol-x",
                                                        "serial": "vol-x", "bus": "hm-rp4"])
    }

    @Test func runStatesMapAsDocumented() {
        #expect(QEMUVM.runState(forQMPStatus: "running") == .running)
        for s in ["paused", "prelaunch", "inmigrate", "postmigrate", "finish-migrate"] { #expect(QEMUVM.runState(forQMPStatus: s) == .paused) }
        for s in ["shutdown", "guest-panicked"] { #expect(QEMUVM.runState(forQMPStatus: s) == .shutdown) }
    }

    @Test func diskSerialsAreTheSanitisedIdCutTo20Bytes() {
        #expect(DiskSpec.serial(forID: "vol-abc") == "vol-abc")
        #expect(DiskSpec.serial(forID: "vol-h8ymwwud0vqa8dgu8hkm5j6") == "vol-h8ymwwud0vqa8dgu")
        #expect(DiskSpec.serial(forID: "a b/c,d:é") == "abcd")
        let a = Self.build(Self.spec(disks: [DiskSpec(id: "vol-h8ymwwud0vqa8dgu8hkm5j6", path: "/v.raw", readonly: false)]))
        #expect(Self.values(a, "-device").contains { $0.contains("serial=vol-h8ymwwud0vqa8dgu,") })
    }

    @Test func memorySumThatOverflowsIsRefusedNotATrap() {
        var spec = Self.spec(hotplug: Int64.max - (1 << 30))
        spec.memoryBytes = 7 << 60
        #expect(throws: VMMError.self) {
            _ = try QEMUArgs.build(spec, layout: QEMULayout.initial(for: spec, options: QEMUOptions()), options: QEMUOptions())
        }
        var negative = Self.spec()
        negative.memoryBytes = -1
        #expect(throws: VMMError.self) {
            _ = try QEMUArgs.build(negative, layout: QEMULayout.initial(for: negative, options: QEMUOptions()), options: QEMUOptions())
        }
        // Large but representable: maxmem is the exact sum.
        var big = Self.spec(hotplug: 1 << 40)
        big.memoryBytes = 1 << 40
        #expect(Self.values(Self.build(big), "-m") == ["\(Int64(1) << 40)B,maxmem=\(Int64(1) << 41)B"])
    }
}
