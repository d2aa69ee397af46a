import VMM

/// The QEMU machine type a driver builds VMs on.
public enum QEMUMachine: String, Sendable, Codable, CaseIterable {
    /// PCIe machine: virtio-mem memory resize (device memory above 4 GiB) and disk hot-plug through
    /// `pcie-root-port`s (native PCIe hot-plug, `pciehp`, built into Debian's kernel). The default.
    case q35
    /// Minimal virtio-mmio machine: faster to start, but on QEMU 7.2 it has no device-memory region
    /// (virtio-mem gets no address; `pc-dimm` is refused) and virtio-mmio cannot hot-plug, so
    /// memory resize and disk hot-plug are unavailable. Boot relies on PIT calibration, which
    /// stalls under TCG on a loaded host.
    case microvm
}

/// Host- and operator-level choices that shape the argv beyond the `VMSpec`.
public struct QEMUOptions: Sendable, Equatable {
    public var machine: QEMUMachine
    /// `-cpu` model; nil picks `qemu64` for TCG (`max` hangs PVH boots at KASLR) and `host` otherwise.
    public var cpuModel: String?
    /// Free `pcie-root-port`s added at launch for disks hot-plugged later (q35 only).
    public var spareHotplugPorts: Int
    /// Whether to add a vhost-vsock device (the host has `/dev/vhost-vsock`).
    public var vhostVsock: Bool

    public init(machine: QEMUMachine = .q35, cpuModel: String? = nil, spareHotplugPorts: Int = 8, vhostVsock: Bool = false) {
        self.machine = machine; self.cpuModel = cpuModel; self.spareHotplugPorts = spareHotplugPorts; self.vhostVsock = vhostVsock
    }
}

/// `VMSpec → argv` for `qemu-system-x86_64`: a pure function, so launch and restore build the
/// same device set and the translation is testable without QEMU.
public enum QEMUArgs {
    /// File names inside `VMSpec.runDir` (short: `sun_path` holds 107 bytes).
    public static let qmpSocketName = "qmp.sock"
    public static let pidFileName = "qemu.pid"

    /// QOM id of the virtio-mem device (`qom-set <id> requested-size`).
    public static let virtioMemID = "hm-vmem"
    public static let virtioMemBackendID = "hm-vmem-ram"
    public static let netdevID = "hm-net0"
    public static let nicID = "hm-nic0"
    public static let vsockID = "hm-vsock0"
    public static let serialChardevID = "hm-ser0"
    /// The guest agent's channel: a virtio-serial controller with one named port, backed by a
    /// Unix socket QEMU listens on (`<runDir>/agent.sock`).
    public static let agentChardevID = "hm-agent"
    public static let virtioSerialID = "hm-vser0"
    public static let agentSocketName = "agent.sock"

    /// Fixed PCI slots on `pcie.0` (q35), so a restore target lays out devices exactly like the
    /// source whatever subset is present.
    static let virtioMemSlot = 0x2, nicSlot = 0x3, vsockSlot = 0x4, virtioSerialSlot = 0x5, firstRootPortSlot = 0x8
    /// Root ports fill slots 0x08…0x1e, 8 functions each (0x1f is the q35 LPC/SMBus slot).
    public static let maxRootPorts = (0x1f - 0x8) * 8

    /// virtio-mem's block size with a RAM backend on x86 (the THP size); sizes are multiples of it.
    public static let virtioMemBlock: Int64 = 2 << 20

    /// Bytes of hot-pluggable memory the VM gets: `spec.hotplugBytes` rounded down to the virtio-mem
    /// block, or 0 on machines without virtio-mem.
    public static func hotplugBytes(_ spec: VMSpec, machine: QEMUMachine) -> Int64 {
        guard machine == .q35, spec.hotplugBytes > 0 else { return 0 }
        return spec.hotplugBytes / virtioMemBlock * virtioMemBlock
    }

    public static func qmpSocketPath(_ spec: VMSpec) -> String { spec.runDir + "/" + qmpSocketName }
    public static func pidFilePath(_ spec: VMSpec) -> String { spec.runDir + "/" + pidFileName }
    public static func agentSocketPath(_ spec: VMSpec) -> String { spec.runDir + "/" + agentSocketName }

    /// The `-cpu` model for `accel` unless `options.cpuModel` overrides it.
    public static func cpuModel(accel: String, options: QEMUOptions) -> String {
        if let m = options.cpuModel { return m }
        return accel.hasPrefix("tcg") ? "qemu64" : "host"
    }

    /// The kernel command line: `spec.cmdline`, plus `memhp_default_state=online` when the VM has
    /// virtio-mem memory and the line does not set it (hot-plugged blocks must come online).
    public static func kernelCmdline(_ spec: VMSpec, machine: QEMUMachine) -> String {
        var line = spec.cmdline
        if hotplugBytes(spec, machine: machine) > 0 && !line.contains("memhp_default_state=") {
            line += line.isEmpty ? "memhp_default_state=online" : " memhp_default_state=online"
        }
        return line
    }

    /// Builds the argv (without the binary). `layout` places disks on root ports (q35);
    /// `incoming` adds `-incoming <value>` for a restore (`defer` to use `migrate-incoming`).
    /// Throws `.invalidSpec` when the memory sizes are negative or their sum overflows.
    public static func build(_ spec: VMSpec, layout: QEMULayout, options: QEMUOptions, incoming: String? = nil) throws(VMMError) -> [String] {
        let machine = layout.machine
        var a: [String] = []
        a += ["-name", "guest=\(esc(spec.instanceID))"]
        a += ["-accel", spec.accel]
        a += ["-M", machine.rawValue]
        a += ["-cpu", cpuModel(accel: spec.accel, options: options)]
        a += ["-smp", String(max(1, spec.vcpus))]
        let hotplug = hotplugBytes(spec, machine: machine)
        guard spec.memoryBytes >= 0, hotplug >= 0 else {
            throw .invalidSpec("memory \(spec.memoryBytes) bytes with \(spec.hotplugBytes) hot-pluggable")
        }
        let (maxMem, overflow) = spec.memoryBytes.addingReportingOverflow(hotplug)
        guard !overflow else {
            throw .invalidSpec("memory \(spec.memoryBytes) bytes plus \(hotplug) hot-pluggable bytes is too large")
        }
        a += ["-m", hotplug > 0 ? "\(spec.memoryBytes)B,maxmem=\(maxMem)B" : "\(spec.memoryBytes)B"]
        a += ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-S"]
        a += ["-pidfile", pidFilePath(spec)]
        a += ["-qmp", "unix:\(esc(qmpSocketPath(spec))),server=on,wait=off"]
        a += ["-chardev", "file,id=\(serialChardevID),path=\(esc(spec.serialLogPath)),append=on"]
        a += ["-serial", "chardev:\(serialChardevID)"]
        a += ["-kernel", spec.kernelPath]
        if !spec.initramfsPath.isEmpty { a += ["-initrd", spec.initramfsPath] }
        let cmdline = kernelCmdline(spec, machine: machine)
        if !cmdline.isEmpty { a += ["-append", cmdline] }

        let pcie = machine == .q35
        if hotplug > 0 {
            a += ["-object", "memory-backend-ram,id=\(virtioMemBackendID),size=\(hotplug)"]
            a += ["-device", "virtio-mem-pci,id=\(virtioMemID),memdev=\(virtioMemBackendID),requested-size=0,bus=pcie.0,addr=\(hex(virtioMemSlot))"]
        }
        if let net = spec.net {
            a += ["-netdev", "tap,id=\(netdevID),ifname=\(esc(net.tap)),script=no,downscript=no"]
            a += ["-device", (pcie ? "virtio-net-pci" : "virtio-net-device")
                    + ",id=\(nicID),netdev=\(netdevID),mac=\(esc(net.mac))" + (pcie ? ",bus=pcie.0,addr=\(hex(nicSlot))" : "")
                    + (pcie ? ",romfile=" : "")]   // no iPXE option ROM: the guest boots from -kernel, and it saves seconds
        }
        if options.vhostVsock {
            a += ["-device", (pcie ? "vhost-vsock-pci" : "vhost-vsock-device")
                    + ",id=\(vsockID),guest-cid=\(spec.vsockCID)" + (pcie ? ",bus=pcie.0,addr=\(hex(vsockSlot))" : "")]
        }
        a += ["-chardev", "socket,id=\(agentChardevID),path=\(esc(agentSocketPath(spec))),server=on,wait=off"]
        a += ["-device", (pcie ? "virtio-serial-pci,id=\(virtioSerialID),bus=pcie.0,addr=\(hex(virtioSerialSlot))" : "virtio-serial-device,id=\(virtioSerialID)")
                + ",max_ports=2"]
        a += ["-device", "virtserialport,bus=\(virtioSerialID).0,chardev=\(agentChardevID),name=\(AgentChannel.virtioPortName)"]
        if pcie {
            for i in 0..<layout.ports { a += ["-device", rootPortDevice(i)] }
        }
        for disk in spec.disks {
            a += ["-blockdev", fileNode(disk)]
            a += ["-blockdev", formatNode(disk)]
            if pcie {
                guard let port = layout.slots[disk.id] else { continue }
                a += ["-device", diskDevice(disk, driver: "virtio-blk-pci", bus: rootPortID(port))]
            } else {
                a += ["-device", diskDevice(disk, driver: "virtio-blk-device", bus: nil)]
            }
        }
        if let incoming { a += ["-incoming", incoming] }
        return a
    }

    // MARK: - Devices

    public static func rootPortID(_ index: Int) -> String { "hm-rp\(index)" }

    static func rootPortDevice(_ i: Int) -> String {
        let slot = firstRootPortSlot + i / 8, fn = i % 8
        var d = "pcie-root-port,id=\(rootPortID(i)),bus=pcie.0,chassis=\(i + 1),addr=\(hex(slot)).\(fn)"
        if fn == 0 { d += ",multifunction=on" }
        return d
    }

    static func fileNode(_ d: DiskSpec) -> String {
        "driver=file,node-name=\(fileNodeName(d.id)),filename=\(esc(d.path)),read-only=\(onOff(d.readonly))"
    }

    static func formatNode(_ d: DiskSpec) -> String {
        "driver=raw,node-name=\(formatNodeName(d.id)),file=\(fileNodeName(d.id)),read-only=\(onOff(d.readonly))"
    }

    static func diskDevice(_ d: DiskSpec, driver: String, bus: String?) -> String {
        var s = "\(driver),id=\(deviceID(d.id)),drive=\(formatNodeName(d.id)),serial=\(blkSerial(d.id))"
        if let bus { s += ",bus=\(bus)" }
        return s
    }

    /// QMP `blockdev-add` arguments for the file (protocol) node of `disk`.
    public static func fileNodeArguments(_ d: DiskSpec) -> QMPJSON {
        ["driver": "file", "node-name": .string(fileNodeName(d.id)), "filename": .string(d.path), "read-only": .bool(d.readonly)]
    }

    /// QMP `blockdev-add` arguments for the raw format node of `disk`, stacked on its file node.
    public static func formatNodeArguments(_ d: DiskSpec) -> QMPJSON {
        ["driver": "raw", "node-name": .string(formatNodeName(d.id)), "file": .string(fileNodeName(d.id)), "read-only": .bool(d.readonly)]
    }

    /// QMP `device_add` arguments for `disk` on root port `port`.
    public static func deviceArguments(_ d: DiskSpec, port: Int) -> QMPJSON {
        ["driver": "virtio-blk-pci", "id": .string(deviceID(d.id)), "drive": .string(formatNodeName(d.id)),
         "serial": .string(blkSerial(d.id)), "bus": .string(rootPortID(port))]
    }

    // MARK: - Names

    /// QEMU ids and node names must start with a letter and hold only letters, digits, `-`, `.`
    /// and `_`; node names are at most 31 bytes. A well-formed short disk id is used as is; any
    /// other id becomes a sanitised prefix plus a hash of the id, so it stays stable and unique.
    static func baseName(_ id: String) -> String {
        var sanitized = String(id.unicodeScalars.map { s -> Character in
            let ok = s.isASCII && (s.properties.isAlphabetic || ("0"..."9").contains(s) || s == "-" || s == "." || s == "_")
            return ok ? Character(s) : "_"
        })
        if let f = sanitized.unicodeScalars.first, !(f.isASCII && f.properties.isAlphabetic) { sanitized = "x" + sanitized }
        if sanitized == id && id.utf8.count <= 29 { return id }
        return String(sanitized.prefix(20)) + "-" + fnv1a32Hex(id)
    }

    /// The qdev id of the disk's virtio-blk device (`device_del` target).
    public static func deviceID(_ diskID: String) -> String { baseName(diskID) }
    /// Node name of the disk's `file` node.
    public static func fileNodeName(_ diskID: String) -> String { "f-" + baseName(diskID) }
    /// Node name of the disk's `raw` node (the device's `drive`).
    public static func formatNodeName(_ diskID: String) -> String { "d-" + baseName(diskID) }
    /// The virtio-blk serial (guest `/sys/block/vdX/serial`), at most 20 bytes.
    static func blkSerial(_ diskID: String) -> String { DiskSpec.serial(forID: diskID) }

    // MARK: - Helpers

    /// Escapes a value inside a QEMU `key=value,…` option (a comma is written twice).
    public static func esc(_ s: String) -> String { s.replacing(",", with: ",,") }

    static func onOff(_ b: Bool) -> String { b ? "on" : "off" }
    static func hex(_ v: Int) -> String { "0x" + String(v, radix: 16) }

    static func fnv1a32Hex(_ s: String) -> String {
        var h: UInt32 = 0x811c9dc5
        for b in s.utf8 { h = (h ^ UInt32(b)) &* 0x0100_0193 }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }
}
