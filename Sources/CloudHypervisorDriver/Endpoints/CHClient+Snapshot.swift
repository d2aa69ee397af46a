import VMM

/// Snapshot and restore (`file://` directories holding config.json, state.json, memory-ranges).
extension CHClient {
    /// `PUT /api/v1/vm.snapshot` `{"destination_url":"file:///dir"}` → 204. The VM must be
    /// paused; `dir` must exist and must not hold the three files already.
    public func snapshot(destinationURL: String) throws(VMMError) {
        _ = try put("vm.snapshot", CloudHypervisor.VmSnapshotConfig(destinationURL: destinationURL), timeout: longTimeout)
    }

    /// `PUT /api/v1/vm.restore` `{"source_url":"file:///dir","prefault":false}` → 204. Only
    /// into a VMM with no VM config; the VM comes back paused.
    public func restore(sourceURL: String, prefault: Bool = false) throws(VMMError) {
        _ = try put("vm.restore", CloudHypervisor.RestoreConfig(sourceURL: sourceURL, prefault: prefault), timeout: longTimeout)
    }
}
