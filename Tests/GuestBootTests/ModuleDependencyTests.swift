import Testing
@testable import GuestBoot

@Suite struct ModuleDependencyTests {
    // Shaped like Debian 6.1's modules.dep (depmod lists every transitive dependency, in an
    // order where loading from the last to the first works).
    let sample = """
    kernel/drivers/virtio/virtio_ring.ko:
    kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
    kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
    kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
    kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
    kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
    kernel/net/core/failover.ko:
    kernel/lib/crc16.ko:
    kernel/fs/mbcache.ko:
    kernel/fs/jbd2/jbd2.ko:
    kernel/crypto/crc32c_generic.ko:
    kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
    kernel/fs/overlayfs/overlay.ko:
    kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/net/vmw_vsock/vsock.ko
    kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
    kernel/net/vmw_vsock/vsock.ko:
    kernel/drivers/input/evdev.ko.xz:
    """

    let builtin = """
    kernel/drivers/virtio/virtio_pci.ko
    kernel/drivers/char/virtio_console.ko
    """

    func names(_ p: ModulePlan) -> [String] { p.load.map(\.name) }

    func assertDependenciesFirst(_ plan: ModulePlan, _ deps: ModuleDependencies) {
        var loaded: Set<String> = []
        for m in plan.load {
            #expect(!loaded.contains(m.name), "\(m.name) listed twice")
            loaded.insert(m.name)
        }
        let position = Dictionary(uniqueKeysWithValues: plan.load.enumerated().map { ($1.name, $0) })
        #expect((position["virtio_ring"] ?? 99) < (position["virtio"] ?? -1))
        #expect((position["virtio"] ?? 99) < (position["virtio_blk"] ?? -1))
        #expect((position["failover"] ?? 99) < (position["net_failover"] ?? -1))
        #expect((position["net_failover"] ?? 99) < (position["virtio_net"] ?? -1))
        #expect((position["jbd2"] ?? 99) < (position["ext4"] ?? -1))
        #expect((position["vsock"] ?? 99) < (position["vmw_vsock_virtio_transport_common"] ?? -1))
    }

    @Test func ordersDependenciesFirstAndSkipsBuiltins() throws {
        let deps = try ModuleDependencies(modulesDep: sample, modulesBuiltin: builtin)
        let plan = try deps.plan(wanted: InitramfsBuilder.defaultModules, required: InitramfsBuilder.requiredModules)
        #expect(names(plan) == [
            "virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "failover", "net_failover", "virtio_net",
            "crc32c_generic", "crc16", "mbcache", "jbd2", "ext4", "overlay",
            "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "evdev",
        ])
        #expect(plan.builtin == ["virtio_pci", "virtio_console"])
        #expect(plan.unavailable == ["virtio_mem", "button"])
        #expect(plan.load.first { $0.name == "evdev" }?.relativePath == "kernel/drivers/input/evdev.ko.xz")
        assertDependenciesFirst(plan, deps)
    }

    @Test func orderDoesNotDependOnHowDependenciesAreListed() throws {
        // Same graph with each dependency list reversed, and the lines shuffled.
        let lines = sample.split(separator: "\n").map { line -> String in
            let parts = line.split(separator: ":", maxSplits: 1)
            let ds = parts.count > 1 ? parts[1].split(separator: " ").reversed().joined(separator: " ") : ""
            return "\(parts[0]): \(ds)"
        }
        let deps = try ModuleDependencies(modulesDep: lines.reversed().joined(separator: "\n"), modulesBuiltin: builtin)
        let plan = try deps.plan(wanted: ["virtio_net", "vmw_vsock_virtio_transport", "ext4", "virtio-blk"])
        assertDependenciesFirst(plan, deps)
        #expect(Set(names(plan)) == ["virtio_ring", "virtio", "failover", "net_failover", "virtio_net", "vsock",
                                     "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
                                     "crc16", "mbcache", "jbd2", "ext4", "virtio_blk"])
    }

    @Test func requiredMissingThrowsAndCyclesAreCaught() throws {
        let deps = try ModuleDependencies(modulesDep: sample, modulesBuiltin: builtin)
        #expect(throws: GuestBootError.self) { try deps.plan(wanted: ["erofs"], required: ["erofs"]) }
        #expect(try deps.plan(wanted: ["virtio_pci"], required: ["virtio_pci"]).builtin == ["virtio_pci"])

        let cyclic = try ModuleDependencies(modulesDep: "a.ko: b.ko\nb.ko: a.ko\n")
        #expect(throws: GuestBootError.self) { try cyclic.plan(wanted: ["a"]) }
        let dangling = try ModuleDependencies(modulesDep: "a.ko: missing.ko\n")
        #expect(throws: GuestBootError.self) { try dangling.plan(wanted: ["a"]) }
        #expect(throws: GuestBootError.self) { try ModuleDependencies(modulesDep: "no colon here\n") }
    }

    @Test func moduleNames() {
        #expect(ModuleDependencies.moduleName(forPath: "kernel/crypto/crc32c-generic.ko.zst") == "crc32c_generic")
        #expect(ModuleDependencies.moduleName(forPath: "kernel/fs/ext4/ext4.ko") == "ext4")
        #expect(ModuleDependencies.moduleName(forPath: "modules.dep") == nil)
        #expect(ModuleDependencies.moduleName(forPath: ".ko") == nil)
    }
}
