import VMM

/// Device hot-plug and hot-unplug, by device id.
extension CHClient {
    /// `PUT /api/v1/vm.add-disk` with a `DiskConfig` → 200 `PciDeviceInfo` on a booted VM, 204
    /// (returns nil) on a created one, where only the config changes.
    @discardableResult
    public func addDisk(_ disk: CloudHypervisor.DiskConfig) throws(VMMError) -> CloudHypervisor.PciDeviceInfo? {
        let response = try put("vm.add-disk", disk)
        if response.status == 204 || response.body.isEmpty { return nil }
        return try decode(CloudHypervisor.PciDeviceInfo.self, from: response, endpoint: "vm.add-disk")
    }

    /// `PUT /api/v1/vm.remove-device` `{"id":…}` → 204; 500 for an unknown id.
    public func removeDevice(id: String) throws(VMMError) {
        _ = try put("vm.remove-device", CloudHypervisor.VmRemoveDevice(id: id))
    }
}
