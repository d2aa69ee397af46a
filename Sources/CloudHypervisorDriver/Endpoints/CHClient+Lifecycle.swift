import VMM

/// The VM's life: create, boot, state, pause/resume, power-off, delete.
extension CHClient {
    /// `PUT /api/v1/vm.create` with a `VmConfig` → 204. Only stores the config (and opens the
    /// serial file); validation happens at boot. 500 if a config is already stored.
    public func create(_ config: CloudHypervisor.VmConfig) throws(VMMError) {
        _ = try put("vm.create", config)
    }

    /// `PUT /api/v1/vm.boot` (no body) → 204. Builds and starts the VM from the stored config;
    /// config, kernel and device errors surface here as 500. Boots again after `vm.shutdown`.
    public func boot() throws(VMMError) {
        try put("vm.boot", timeout: longTimeout)
    }

    /// `GET /api/v1/vm.info` → 200 `VmInfo` (config with defaults, state, memory, device tree);
    /// 500 when no VM is created.
    public func info() throws(VMMError) -> CloudHypervisor.VmInfo {
        try get("vm.info", as: CloudHypervisor.VmInfo.self)
    }

    /// `PUT /api/v1/vm.pause` (no body) → 204; 500 unless the VM is running.
    public func pause() throws(VMMError) {
        try put("vm.pause")
    }

    /// `PUT /api/v1/vm.resume` (no body) → 204; 500 unless the VM is paused.
    public func resume() throws(VMMError) {
        try put("vm.resume")
    }

    /// `PUT /api/v1/vm.power-button` (no body) → 204: an ACPI power-button event. The guest
    /// decides; a guest that powers off ends the VMM process.
    public func powerButton() throws(VMMError) {
        try put("vm.power-button")
    }

    /// `PUT /api/v1/vm.shutdown` (no body) → 204: tears the VM down but keeps its config and
    /// the process (`vm.info` then reports `Created`; `vm.boot` starts it again).
    public func shutdownVM() throws(VMMError) {
        try put("vm.shutdown")
    }

    /// `PUT /api/v1/vm.reboot` (no body) → 204: re-creates the VM from its config and boots it.
    public func reboot() throws(VMMError) {
        try put("vm.reboot", timeout: longTimeout)
    }

    /// `PUT /api/v1/vm.delete` (no body) → 204: shuts the VM down if needed and drops its config;
    /// succeeds when nothing is created. The process stays.
    public func delete() throws(VMMError) {
        try put("vm.delete")
    }
}
