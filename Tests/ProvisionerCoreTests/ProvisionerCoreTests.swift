import Testing
@testable import ProvisionerCore
import Model
import VMM

/// A driver stand-in for selection logic only (no VM is ever launched through it).
struct FakeDriver: HypervisorDriver {
    let kind: String
    let available: Bool
    var capabilities: Capabilities { Capabilities(snapshot: true, memoryResize: true, diskHotplug: true, vsock: true) }
    func isAvailable() -> Bool { available }
    func launch(_ spec: VMSpec) throws(VMMError) -> any RunningVM { throw .unsupported("fake") }
    func restore(_ spec: VMSpec, from snapshotDir: String) throws(VMMError) -> any RunningVM { throw .unsupported("fake") }
    func attach(_ spec: VMSpec, pid: Int32) -> (any RunningVM)? { nil }
}

@Suite struct DriverTableTests {
    @Test func autoPrefersCloudHypervisorWhenPresent() throws {
        let t = DriverTable(drivers: [FakeDriver(kind: "qemu", available: true), FakeDriver(kind: "cloud-hypervisor", available: true)])
        #expect(t.defaultKind == "cloud-hypervisor")
        #expect(try t.driver(nil).kind == "cloud-hypervisor")
        #expect(try t.driver("qemu").kind == "qemu")
    }

    @Test func fallsBackToQEMUAndExplainsWhatIsMissing() throws {
        let t = DriverTable(drivers: [FakeDriver(kind: "cloud-hypervisor", available: false), FakeDriver(kind: "qemu", available: true)])
        #expect(t.defaultKind == "qemu")
        do { _ = try t.driver("cloud-hypervisor"); Issue.record("must fail") } catch {
            #expect(error.code == .dependencyMissing)
            #expect(error.message.contains("available: qemu"))
        }
        let none = DriverTable(drivers: [FakeDriver(kind: "qemu", available: false)])
        do { _ = try none.driver(nil); Issue.record("must fail") } catch {
            #expect(error.message.contains("install qemu-system-x86"))
        }
    }

    @Test func explicitPreferenceWins() {
        let t = DriverTable(drivers: [FakeDriver(kind: "qemu", available: true), FakeDriver(kind: "cloud-hypervisor", available: true)],
                            preferred: "qemu")
        #expect(t.defaultKind == "qemu")
    }
}

@Suite struct VsockCIDTests {
    @Test func cidsAreStableAndInRange() {
        for _ in 0..<1000 {
            let id = CUID2.make()
            let cid = InstanceManager.legacyVsockCID(id)
            #expect(cid >= 3)
            #expect(cid == InstanceManager.legacyVsockCID(id))
        }
    }
}
