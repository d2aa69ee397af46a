import Foundation
import VMM

/// Translates a hypervisor-neutral `VMSpec` into Cloud Hypervisor's `VmConfig` (pure: no I/O).
///
/// Mapping: payload = kernel/initramfs/cmdline; `cpus` boot = max = `vcpus` (no CPU hotplug);
/// `memory.size` = base, plus `hotplug_size` and `hotplug_method: VirtioMem` when there is a
/// hot-plug reserve; disks keep their ids (for hot-unplug) and read-only flags; one NIC `net0`
/// on the given tap; serial → `File` at `serialLogPath` (the guest uses `console=ttyS0`);
/// virtio-console `Off` (CH's default, `Tty`, would write to the VMM's stdout); hybrid vsock at
/// `<runDir>/vsock.sock`.
public enum CHConfig {
    /// The API socket CH listens on: `<runDir>/ch.sock`.
    public static func apiSocketPath(runDir: String) -> String { join(runDir, "ch.sock") }
    /// The hybrid-vsock Unix socket: `<runDir>/vsock.sock` (guest→host ports at `vsock.sock_<port>`).
    public static func vsockSocketPath(runDir: String) -> String { join(runDir, "vsock.sock") }
    /// CH's HTTP parser refuses bodies above this size (micro_http's default; CH does not raise it).
    public static let maxBodyBytes = 51_200
    /// The NIC id given to the spec's interface.
    public static let netID = "net0"

    /// The `VmConfig` for `spec`. `vmmMajorVersion` (from `vmm.ping`) enables fields that only
    /// exist in newer VMMs: `image_type: Raw` from v51.
    public static func vmConfig(for spec: VMSpec, vmmMajorVersion: Int? = nil) -> CloudHypervisor.VmConfig {
        let payload = CloudHypervisor.PayloadConfig(
            kernel: spec.kernelPath,
            initramfs: spec.initramfsPath.isEmpty ? nil : spec.initramfsPath,
            cmdline: spec.cmdline.isEmpty ? nil : spec.cmdline)
        let memory = CloudHypervisor.MemoryConfig(
            size: spec.memoryBytes,
            hotplugSize: spec.hotplugBytes > 0 ? spec.hotplugBytes : nil,
            hotplugMethod: spec.hotplugBytes > 0 ? "VirtioMem" : nil)
        let disks = spec.disks.map { disk(for: $0, vmmMajorVersion: vmmMajorVersion) }
        let net = spec.net.map { n in
            [CloudHypervisor.NetConfig(tap: n.tap, ip: n.ip.isEmpty ? nil : n.ip, mask: n.mask.isEmpty ? nil : n.mask,
                                       mac: n.mac.isEmpty ? nil : n.mac, id: netID)]
        }
        return CloudHypervisor.VmConfig(
            payload: payload,
            cpus: CloudHypervisor.CpusConfig(bootVcpus: spec.vcpus, maxVcpus: spec.vcpus),
            memory: memory,
            disks: disks.isEmpty ? nil : disks,
            net: net,
            serial: CloudHypervisor.ConsoleConfig(mode: "File", file: spec.serialLogPath),
            console: CloudHypervisor.ConsoleConfig(mode: "Off"),
            vsock: CloudHypervisor.VsockConfig(cid: UInt64(spec.vsockCID), socket: vsockSocketPath(runDir: spec.runDir)))
    }

    /// One disk as `DiskConfig` (also the body of `vm.add-disk`).
    public static func disk(for disk: DiskSpec, vmmMajorVersion: Int? = nil) -> CloudHypervisor.DiskConfig {
        let raw = (vmmMajorVersion ?? 0) >= 51 ? "Raw" : nil
        return CloudHypervisor.DiskConfig(path: disk.path, readonly: disk.readonly, id: disk.id, serial: disk.serial, imageType: raw)
    }

    /// JSON as sent on the wire: sorted keys, `/` unescaped, `nil` fields left out.
    public static func encode<T: Encodable>(_ value: T) throws(VMMError) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            return Array(try encoder.encode(value))
        } catch {
            throw .decoding("cannot encode \(T.self) as JSON: \(error)")
        }
    }

    static func join(_ dir: String, _ name: String) -> String {
        dir.hasSuffix("/") ? dir + name : dir + "/" + name
    }
}
