import Foundation
import Model
import GuestBoot

/// The kernel and initramfs every guest boots: located/built once, on first use, and cached.
/// The initramfs file is named by the hash of its inputs, so a changed init means a new file
/// while snapshots keep referring to the old one.
public final class GuestAssets: @unchecked Sendable {
    let kernelDir: String
    let outDir: String
    let agentBinary: String?
    let lock = NSLock()
    var cached: (kernel: String, initramfs: String)?

    public init(kernelDir: String, outDir: String, agentBinary: String?) {
        self.kernelDir = kernelDir
        self.outDir = outDir
        self.agentBinary = agentBinary
    }

    /// Paths of vmlinux and the initramfs; `dependency_missing` with the fix when the kernel is absent.
    public func paths() throws -> (kernel: String, initramfs: String) {
        lock.lock(); defer { lock.unlock() }
        if let cached { return cached }
        let kernel: KernelFiles
        do { kernel = try KernelLocator(kernelDirectory: kernelDir).locate() } catch {
            throw APIError(.dependencyMissing, "guest kernel missing: \(error)")
        }
        let image = try InitramfsBuilder(kernel: kernel, agentPath: agentBinary).build(outputDirectory: outDir)
        cached = (kernel.vmlinuxPath, image.path)
        return cached!
    }
}
