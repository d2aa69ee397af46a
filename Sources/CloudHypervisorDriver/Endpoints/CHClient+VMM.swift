import VMM

/// The VMM itself: liveness and exit.
extension CHClient {
    /// `GET /api/v1/vmm.ping` → 200 `VmmPingResponse` (version, pid, features).
    public func ping() throws(VMMError) -> CloudHypervisor.VmmPingResponse {
        try get("vmm.ping", as: CloudHypervisor.VmmPingResponse.self)
    }

    /// `PUT /api/v1/vmm.shutdown` (no body) → 200 with an empty body: deletes the VM, then the
    /// process exits and removes its API socket.
    public func shutdownVMM() throws(VMMError) {
        try put("vmm.shutdown")
    }
}
