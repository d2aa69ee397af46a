import Foundation
import Testing
@testable import CloudHypervisorDriver
import VMM
#if canImport(Glibc)
import Glibc
#endif

@Suite struct CHConfigTests {
    static func spec(hotplug: Int64 = 3 << 30, net: NetSpec? = NetSpec(tap: "hype-k3v9q0b2", mac: "02:00:00:5e:a1:0c",
                                                                      ip: "10.100.37.12", mask: "255.255.0.0"),
                     initramfs: String = "/k/initrd", cmdline: String = "console=ttyS0") -> VMSpec {
        VMSpec(instanceID: "abc", vcpus: 4, memoryBytes: 1 << 30, hotplugBytes: hotplug,
               kernelPath: "/k/vmlinux", initramfsPath: initramfs, cmdline: cmdline,
               disks: [DiskSpec(id: "rootfs", path: "/i/rootfs.ext4", readonly: true),
                       DiskSpec(id: "overlay", path: "/g/overlay.raw", readonly: false),
                       DiskSpec(id: "config", path: "/g/config.ext4", readonly: true),
                       DiskSpec(id: "vol-v1", path: "/v/data.raw", readonly: false)],
               net: net, serialLogPath: "/g/logs/app.log", vmmLogPath: "/g/logs/vmm.log",
               runDir: "/g/run", vsockCID: 1234567)
    }

    static func json(_ config: CloudHypervisor.VmConfig) throws -> [String: Any] {
        let bytes = try CHConfig.encode(config)
        return try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    @Test func mapsEveryFieldOfTheSpec() throws {
        let c = CHConfig.vmConfig(for: Self.spec())
        #expect(c.payload == CloudHypervisor.PayloadConfig(kernel: "/k/vmlinux", initramfs: "/k/initrd", cmdline: "console=ttyS0"))
        #expect(c.cpus == CloudHypervisor.CpusConfig(bootVcpus: 4, maxVcpus: 4))
        #expect(c.memory == CloudHypervisor.MemoryConfig(size: 1 << 30, hotplugSize: 3 << 30, hotplugMethod: "VirtioMem"))
        #expect(c.disks == [
            CloudHypervisor.DiskConfig(path: "/i/rootfs.ext4", readonly: true, id: "rootfs", serial: "rootfs"),
            CloudHypervisor.DiskConfig(path: "/g/overlay.raw", readonly: false, id: "overlay", serial: "overlay"),
            CloudHypervisor.DiskConfig(path: "/g/config.ext4", readonly: true, id: "config", serial: "config"),
            CloudHypervisor.DiskConfig(path: "/v/data.raw", readonly: false, id: "vol-v1", serial: "vol-v1"),
        ])
        #expect(c.net == [CloudHypervisor.NetConfig(tap: "hype-k3v9q0b2", ip: "10.100.37.12", mask: "255.255.0.0",
                                                    mac: "02:00:00:5e:a1:0c", id: "net0")])
        #expect(c.serial == CloudHypervisor.ConsoleConfig(mode: "File", file: "/g/logs/app.log"))
        #expect(c.console == CloudHypervisor.ConsoleConfig(mode: "Off"))
        #expect(c.vsock == CloudHypervisor.VsockConfig(cid: 1234567, socket: "/g/run/vsock.sock"))
    }

    @Test func encodesCHKeyNamesAndLeavesOutNil() throws {
        let j = try Self.json(CHConfig.vmConfig(for: Self.spec()))
        #expect(Set(j.keys) == ["payload", "cpus", "memory", "disks", "net", "serial", "console", "vsock"])
        let cpus = try #require(j["cpus"] as? [String: Any])
        #expect(cpus["boot_vcpus"] as? Int == 4 && cpus["max_vcpus"] as? Int == 4)
        let memory = try #require(j["memory"] as? [String: Any])
        #expect(Set(memory.keys) == ["size", "hotplug_size", "hotplug_method"])
        #expect(memory["size"] as? Int == 1 << 30 && memory["hotplug_size"] as? Int == 3 << 30)
        #expect(memory["hotplug_method"] as? String == "VirtioMem")
        let disks = try #require(j["disks"] as? [[String: Any]])
        #expect(disks.count == 4)
        #expect(disks.allSatisfy { Set($0.keys) == ["path", "readonly", "id", "serial"] })
        #expect(disks.map { $0["serial"] as? String } == disks.map { $0["id"] as? String })   // short ids are their own serial
        #expect(disks[1]["readonly"] as? Bool == false)
        #expect(j["console"] as? [String: String] == ["mode": "Off"])
        #expect(j["serial"] as? [String: String] == ["mode": "File", "file": "/g/logs/app.log"])
        let vsock = try #require(j["vsock"] as? [String: Any])
        #expect(vsock["cid"] as? Int == 1234567 && vsock["socket"] as? String == "/g/run/vsock.sock")
        let text = String(decoding: try CHConfig.encode(CHConfig.vmConfig(for: Self.spec())), as: UTF8.self)
        #expect(!text.contains("null") && !text.contains("\\/"), "no nulls, slashes unescaped: \(text)")
        #expect(text.utf8.count < CHConfig.maxBodyBytes)
    }

    @Test func withoutHotplugNetInitramfsOrCmdlineThoseKeysAreAbsent() throws {
        let j = try Self.json(CHConfig.vmConfig(for: Self.spec(hotplug: 0, net: nil, initramfs: "", cmdline: "")))
        #expect(j["net"] == nil)
        #expect(Set(try #require(j["memory"] as? [String: Any]).keys) == ["size"])
        #expect(Set(try #require(j["payload"] as? [String: Any]).keys) == ["kernel"])
    }

    @Test func newerVMMsGetRawImageType() throws {
        for (version, expected) in [(48, nil), (50, nil), (51, "Raw"), (53, "Raw")] as [(Int, String?)] {
            let c = CHConfig.vmConfig(for: Self.spec(), vmmMajorVersion: version)
            #expect(c.disks?.allSatisfy { $0.imageType == expected } == true, "v\(version)")
        }
        #expect(CHConfig.disk(for: DiskSpec(id: "v", path: "/p", readonly: false), vmmMajorVersion: 52).imageType == "Raw")
    }

    @Test func socketPathsLiveInTheRunDirectory() {
        #expect(CHConfig.apiSocketPath(runDir: "/g/run") == "/g/run/ch.sock")
        #expect(CHConfig.apiSocketPath(runDir: "/g/run/") == "/g/run/ch.sock")
        #expect(CHConfig.vsockSocketPath(runDir: "/g/run") == "/g/run/vsock.sock")
    }

    @Test func pingVersionParsing() {
        #expect(CloudHypervisor.VmmPingResponse(version: "48.0.0").majorVersion == 48)
        #expect(CloudHypervisor.VmmPingResponse(buildVersion: "v51.1-12-gabc", version: "").majorVersion == 51)
        #expect(CloudHypervisor.VmmPingResponse(version: "v53.0").majorVersion == 53)
        #expect(CloudHypervisor.VmmPingResponse(buildVersion: "dev", version: "unknown").majorVersion == nil)
    }

    /// A vm.info answer shaped like CH's (nulls, defaults and fields we do not model) decodes.
    @Test func decodesARealisticVmInfo() throws {
        let text = """
        {"config":{"cpus":{"boot_vcpus":2,"max_vcpus":4,"topology":null,"kvm_hyperv":false,"max_phys_bits":46,
        "affinity":null,"features":{"amx":false}},"memory":{"size":1073741824,"mergeable":false,
        "hotplug_method":"VirtioMem","hotplug_size":4294967296,"hotplugged_size":536870912,"shared":false,
        "hugepages":false,"hugepage_size":null,"prefault":false,"zones":null,"thp":true},
        "payload":{"firmware":null,"kernel":"/k/vmlinux","cmdline":"console=ttyS0","initramfs":null},
        "rate_limit_groups":null,"disks":[{"path":"/r.img","readonly":true,"direct":false,"iommu":false,
        "num_queues":1,"queue_size":128,"vhost_user":false,"vhost_socket":null,"rate_limit_group":null,
        "rate_limiter_config":null,"id":"rootfs","disable_io_uring":false,"disable_aio":false,"pci_segment":0,
        "serial":null,"queue_affinity":null}],"net":null,"rng":{"src":"/dev/urandom","iommu":false},"balloon":null,
        "fs":null,"pmem":null,"serial":{"file":"/a.log","mode":"File","iommu":false,"socket":null},
        "console":{"file":null,"mode":"Off","iommu":false,"socket":null},"devices":null,"user_devices":null,
        "vdpa":null,"vsock":{"cid":3,"socket":"/v.sock","iommu":false,"id":"_vsock0","pci_segment":0},
        "pvpanic":false,"iommu":false,"numa":null,"watchdog":false,"platform":null,"tpm":null,"preserved_fds":null,
        "landlock_enable":false,"landlock_rules":null},"state":"Running","memory_actual_size":1610612736,
        "device_tree":{"rootfs":{"id":"rootfs","resources":[],"parent":"_virtio-pci-rootfs","children":[],
        "pci_bdf":null},"_virtio-pci-rootfs":{"id":"_virtio-pci-rootfs","resources":[{"PciBar":{"index":0,
        "base":4026531840,"size":524288,"type_":"Mmio32","prefetchable":false}}],"parent":null,
        "children":["rootfs"],"pci_bdf":"0000:00:02.0"}}}
        """
        let info = try JSONDecoder().decode(CloudHypervisor.VmInfo.self, from: Data(text.utf8))
        #expect(info.state == "Running")
        #expect(info.memoryActualSize == 1_610_612_736)
        #expect(info.config.memory?.hotpluggedSize == 536_870_912)
        #expect(info.config.disks?.first?.id == "rootfs")
        #expect(info.config.vsock?.id == "_vsock0")
        #expect(info.deviceTree?["_virtio-pci-rootfs"]?.pciBdf == "0000:00:02.0")
        #expect(info.deviceTree?["rootfs"]?.parent == "_virtio-pci-rootfs")
    }

    /// The 50 KiB body limit is enforced before anything is sent.
    @Test func oversizedConfigIsRefusedBeforeSending() {
        var spec = Self.spec()
        spec.cmdline = String(repeating: "x", count: 60_000)
        let client = CHClient(socketPath: "/nonexistent/ch.sock", timeout: 2)
        let error = vmmError { () throws(VMMError) in try client.create(CHConfig.vmConfig(for: spec)) }
        guard case .unsupported(let message)? = error else {
            Issue.record("expected .unsupported, got \(String(describing: error))"); return
        }
        #expect(message.contains("51200"))
    }

    @Test func noSocketIsATransportError() {
        let client = CHClient(socketPath: "/nonexistent/ch.sock", timeout: 2)
        let error = vmmError { () throws(VMMError) in _ = try client.ping() }
        guard case .transport? = error else { Issue.record("expected .transport, got \(String(describing: error))"); return }
    }

    /// A VMM that accepts but never answers ends in `.timeout`, not a hang.
    @Test func silentSocketIsATimeout() throws {
        var template = Array("/tmp/chd.XXXXXX".utf8CString)
        let dir = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/ch.sock"
        let fd = try listenUnix(path)
        defer { close(fd) }
        let client = CHClient(socketPath: path, timeout: 1)
        let error = vmmError { () throws(VMMError) in try client.pause() }
        guard case .timeout? = error else { Issue.record("expected .timeout, got \(String(describing: error))"); return }
    }
}

/// A listening Unix socket (never accepted from), for tests.
func listenUnix(_ path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw StandIn.Failure("socket: \(errno)") }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in raw.copyBytes(from: bytes); raw[bytes.count] = 0 }
    let rc = withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0, listen(fd, 8) == 0 else { close(fd); throw StandIn.Failure("bind/listen \(path): \(errno)") }
    return fd
}
