/// Cloud Hypervisor's wire types (v48 OpenAPI `components/schemas`), named as upstream names them.
/// Only the fields this project sends or reads are modelled; unknown fields in answers are ignored,
/// and `nil` fields are left out of requests (CH fills its own defaults).
public enum CloudHypervisor {}

extension CloudHypervisor {
    /// `VmConfig`: the body of `PUT /api/v1/vm.create`, and `config` in `vm.info` and snapshots.
    public struct VmConfig: Codable, Sendable, Equatable {
        public var payload: PayloadConfig
        public var cpus: CpusConfig?
        public var memory: MemoryConfig?
        public var disks: [DiskConfig]?
        public var net: [NetConfig]?
        public var serial: ConsoleConfig?
        public var console: ConsoleConfig?
        public var vsock: VsockConfig?

        public init(payload: PayloadConfig, cpus: CpusConfig? = nil, memory: MemoryConfig? = nil,
                    disks: [DiskConfig]? = nil, net: [NetConfig]? = nil, serial: ConsoleConfig? = nil,
                    console: ConsoleConfig? = nil, vsock: VsockConfig? = nil) {
            self.payload = payload; self.cpus = cpus; self.memory = memory; self.disks = disks
            self.net = net; self.serial = serial; self.console = console; self.vsock = vsock
        }
    }

    /// `PayloadConfig`: what to boot (direct kernel boot here).
    public struct PayloadConfig: Codable, Sendable, Equatable {
        public var kernel: String?
        public var initramfs: String?
        public var cmdline: String?
        public var firmware: String?

        public init(kernel: String? = nil, initramfs: String? = nil, cmdline: String? = nil, firmware: String? = nil) {
            self.kernel = kernel; self.initramfs = initramfs; self.cmdline = cmdline; self.firmware = firmware
        }
    }

    /// `CpusConfig`: boot and maximum vCPUs (both required when present).
    public struct CpusConfig: Codable, Sendable, Equatable {
        public var bootVcpus: Int
        public var maxVcpus: Int

        public init(bootVcpus: Int, maxVcpus: Int) { self.bootVcpus = bootVcpus; self.maxVcpus = maxVcpus }

        enum CodingKeys: String, CodingKey {
            case bootVcpus = "boot_vcpus", maxVcpus = "max_vcpus"
        }
    }

    /// `MemoryConfig`: sizes are integers in bytes; `hotplug_method` is `Acpi` or `VirtioMem`.
    public struct MemoryConfig: Codable, Sendable, Equatable {
        public var size: Int64
        public var hotplugSize: Int64?
        public var hotpluggedSize: Int64?
        public var hotplugMethod: String?
        public var shared: Bool?

        public init(size: Int64, hotplugSize: Int64? = nil, hotpluggedSize: Int64? = nil,
                    hotplugMethod: String? = nil, shared: Bool? = nil) {
            self.size = size; self.hotplugSize = hotplugSize; self.hotpluggedSize = hotpluggedSize
            self.hotplugMethod = hotplugMethod; self.shared = shared
        }

        enum CodingKeys: String, CodingKey {
            case size, shared
            case hotplugSize = "hotplug_size", hotpluggedSize = "hotplugged_size", hotplugMethod = "hotplug_method"
        }
    }

    /// `DiskConfig`: one virtio-blk disk, also the body of `PUT /api/v1/vm.add-disk`.
    /// `image_type` exists from v51 on (send `Raw` there: v53 disables sector-0 writes on guessed raw images).
    public struct DiskConfig: Codable, Sendable, Equatable {
        public var path: String?
        public var readonly: Bool?
        public var direct: Bool?
        public var id: String?
        /// The virtio-blk serial the guest reads from `/sys/block/vdX/serial`.
        public var serial: String?
        public var imageType: String?

        public init(path: String?, readonly: Bool? = nil, direct: Bool? = nil, id: String? = nil, serial: String? = nil,
                    imageType: String? = nil) {
            self.path = path; self.readonly = readonly; self.direct = direct; self.id = id; self.serial = serial
            self.imageType = imageType
        }

        enum CodingKeys: String, CodingKey {
            case path, readonly, direct, id, serial
            case imageType = "image_type"
        }
    }

    /// `NetConfig`: an existing TAP; `ip`/`mask` configure the host side only when CH creates the tap.
    public struct NetConfig: Codable, Sendable, Equatable {
        public var tap: String?
        public var ip: String?
        public var mask: String?
        public var mac: String?
        public var id: String?

        public init(tap: String? = nil, ip: String? = nil, mask: String? = nil, mac: String? = nil, id: String? = nil) {
            self.tap = tap; self.ip = ip; self.mask = mask; self.mac = mac; self.id = id
        }
    }

    /// `ConsoleConfig` (serial and virtio-console): mode `Off|Null|Tty|Pty|File|Socket`.
    public struct ConsoleConfig: Codable, Sendable, Equatable {
        public var mode: String
        public var file: String?
        public var socket: String?

        public init(mode: String, file: String? = nil, socket: String? = nil) {
            self.mode = mode; self.file = file; self.socket = socket
        }
    }

    /// `VsockConfig`: hybrid vsock through a Unix socket (CID ≥ 3).
    public struct VsockConfig: Codable, Sendable, Equatable {
        public var cid: UInt64
        public var socket: String
        public var id: String?

        public init(cid: UInt64, socket: String, id: String? = nil) { self.cid = cid; self.socket = socket; self.id = id }
    }
}
