import VMM

/// Resizing memory (and vCPUs/balloon) of a created or running VM.
extension CHClient {
    /// `PUT /api/v1/vm.resize` `{"desired_ram":…}` (and/or `desired_vcpus`, `desired_balloon`) → 204.
    /// With virtio-mem, `desired_ram` is the total (base + plugged); asking for the size already
    /// requested is a 500. 429 while a vCPU removal is pending. On a VM that is not booted it
    /// only edits the config.
    public func resize(_ resize: CloudHypervisor.VmResize) throws(VMMError) {
        _ = try put("vm.resize", resize)
    }

    /// `PUT /api/v1/vm.resize` `{"desired_ram": bytes}` → 204.
    public func resize(desiredRam bytes: Int64) throws(VMMError) {
        try resize(CloudHypervisor.VmResize(desiredRam: bytes))
    }
}
