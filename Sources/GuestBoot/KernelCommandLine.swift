import Foundation

/// The kernel command line for booting our initramfs with the PVH vmlinux.
public enum GuestKernelCommandLine {
    /// Serial console (the instance's app.log), reboot by triple fault, reboot at once on panic
    /// (with QEMU `-no-reboot` the VMM exits instead of looping).
    public static let base = ["console=ttyS0", "reboot=t", "panic=-1"]

    /// `console=ttyS0 reboot=t panic=-1 [quiet] [tsc_early_khz=N] extra…`.
    ///
    /// Pass `tscKHz` under TCG (software emulation): there the guest TSC runs at the host's TSC
    /// rate, and on `-M microvm` (no HPET, no ACPI PM timer) the kernel's only way to learn it
    /// is a PIT calibration that fails when the host is busy; the kernel then stalls before
    /// /init with no timer ticks. Measured on the 2-vCPU dev machine with load 4–8: 12 of 13
    /// boots hung without it, none of 26 with it. Under KVM leave it nil (kvmclock/CPUID report
    /// the frequency).
    public static func make(quiet: Bool = true, tscKHz: Int? = nil, extra: [String] = []) -> String {
        var words = base
        if quiet { words.append("quiet") }
        if let k = tscKHz, k > 0 { words.append("tsc_early_khz=\(k)") }
        return (words + extra).joined(separator: " ")
    }

    /// The host's TSC frequency in kHz, from the first `cpu MHz` line of /proc/cpuinfo, when the
    /// CPU has a constant TSC (`constant_tsc`): nil when unknown. On a host whose `cpu MHz`
    /// follows frequency scaling this is approximate, which only skews a TCG guest's clock.
    public static func hostTSCKHz(cpuinfo: String? = nil) -> Int? {
        guard let text = cpuinfo ?? (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) else { return nil }
        var mhz: Double?
        var constant = false
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmingCharacters(in: .whitespaces)
            if key == "cpu MHz", mhz == nil { mhz = Double(parts[1].trimmingCharacters(in: .whitespaces)) }
            if key == "flags", parts[1].split(separator: " ").contains("constant_tsc") { constant = true }
            if mhz != nil && constant { break }
        }
        guard constant, let m = mhz, m > 100, m < 100_000 else { return nil }
        return Int((m * 1000).rounded())
    }
}
