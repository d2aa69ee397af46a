extension CloudHypervisor {
    /// `VmmPingResponse`: the answer of `GET /api/v1/vmm.ping`.
    public struct VmmPingResponse: Codable, Sendable, Equatable {
        public var buildVersion: String?
        public var version: String
        public var pid: Int64?
        public var features: [String]?

        public init(buildVersion: String? = nil, version: String, pid: Int64? = nil, features: [String]? = nil) {
            self.buildVersion = buildVersion; self.version = version; self.pid = pid; self.features = features
        }

        enum CodingKeys: String, CodingKey {
            case version, pid, features
            case buildVersion = "build_version"
        }

        /// The VMM's major version (`48` from `48.0.0`, or from `v48.0` in `build_version`).
        public var majorVersion: Int? {
            for text in [version, buildVersion ?? ""] {
                let digits = text.drop(while: { $0 == "v" }).prefix(while: { $0.isNumber })
                if let major = Int(digits) { return major }
            }
            return nil
        }
    }

    /// `VmInfo`: the answer of `GET /api/v1/vm.info`.
    public struct VmInfo: Codable, Sendable {
        public var config: VmConfig
        /// `Created`, `Running`, `Paused`, `Shutdown` (or `BreakPoint` in gdb builds).
        public var state: String
        public var memoryActualSize: Int64?
        public var deviceTree: [String: DeviceNode]?

        public init(config: VmConfig, state: String, memoryActualSize: Int64? = nil, deviceTree: [String: DeviceNode]? = nil) {
            self.config = config; self.state = state; self.memoryActualSize = memoryActualSize; self.deviceTree = deviceTree
        }

        enum CodingKeys: String, CodingKey {
            case config, state
            case memoryActualSize = "memory_actual_size", deviceTree = "device_tree"
        }
    }

    /// `DeviceNode`: one entry of `vm.info`'s device tree (resources are not modelled).
    public struct DeviceNode: Codable, Sendable, Equatable {
        public var id: String?
        public var parent: String?
        public var children: [String]?
        public var pciBdf: String?

        enum CodingKeys: String, CodingKey {
            case id, parent, children
            case pciBdf = "pci_bdf"
        }

        public init(id: String? = nil, parent: String? = nil, children: [String]? = nil, pciBdf: String? = nil) {
            self.id = id; self.parent = parent; self.children = children; self.pciBdf = pciBdf
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try? c.decodeIfPresent(String.self, forKey: .id)
            parent = try? c.decodeIfPresent(String.self, forKey: .parent)
            children = try? c.decodeIfPresent([String].self, forKey: .children)
            pciBdf = try? c.decodeIfPresent(String.self, forKey: .pciBdf)   // a string in v48; tolerate others
        }
    }

    /// `PciDeviceInfo`: the answer of a hot-plug (`vm.add-*` on a booted VM).
    public struct PciDeviceInfo: Codable, Sendable, Equatable {
        public var id: String
        public var bdf: String

        public init(id: String, bdf: String) { self.id = id; self.bdf = bdf }
    }

    /// `VmResize`: the body of `PUT /api/v1/vm.resize`.
    public struct VmResize: Codable, Sendable, Equatable {
        public var desiredVcpus: Int?
        public var desiredRam: Int64?
        public var desiredBalloon: Int64?

        public init(desiredVcpus: Int? = nil, desiredRam: Int64? = nil, desiredBalloon: Int64? = nil) {
            self.desiredVcpus = desiredVcpus; self.desiredRam = desiredRam; self.desiredBalloon = desiredBalloon
        }

        enum CodingKeys: String, CodingKey {
            case desiredVcpus = "desired_vcpus", desiredRam = "desired_ram", desiredBalloon = "desired_balloon"
        }
    }

    /// `VmRemoveDevice`: the body of `PUT /api/v1/vm.remove-device`.
    public struct VmRemoveDevice: Codable, Sendable, Equatable {
        public var id: String
        public init(id: String) { self.id = id }
    }

    /// `VmSnapshotConfig`: the body of `PUT /api/v1/vm.snapshot` (`file:///dir`).
    public struct VmSnapshotConfig: Codable, Sendable, Equatable {
        public var destinationURL: String
        public init(destinationURL: String) { self.destinationURL = destinationURL }
        enum CodingKeys: String, CodingKey { case destinationURL = "destination_url" }
    }

    /// `RestoreConfig`: the body of `PUT /api/v1/vm.restore` (`file:///dir`).
    public struct RestoreConfig: Codable, Sendable, Equatable {
        public var sourceURL: String
        public var prefault: Bool?
        public init(sourceURL: String, prefault: Bool? = nil) { self.sourceURL = sourceURL; self.prefault = prefault }
        enum CodingKeys: String, CodingKey { case sourceURL = "source_url", prefault }
    }
}
