import Foundation

/// The guest kernel prepared by `scripts/setup-guest-kernel.sh`: an uncompressed PVH `vmlinux`
/// and the modules the initramfs loads.
public struct KernelFiles: Sendable, Equatable {
    /// The kernel release, e.g. `6.12.117+deb12-amd64` (the name of the version directory).
    public let version: String
    /// `<kernel dir>/<version>`.
    public let directory: String
    /// `<kernel dir>/<version>/vmlinux`: ELF with the Xen PVH entry note (QEMU `-kernel`, CH `payload.kernel`).
    public let vmlinuxPath: String
    /// `<kernel dir>/<version>/modules`: plain `.ko` files under `kernel/…` plus `modules.dep`.
    public let modulesDirectory: String

    public init(version: String, directory: String, vmlinuxPath: String, modulesDirectory: String) {
        self.version = version
        self.directory = directory
        self.vmlinuxPath = vmlinuxPath
        self.modulesDirectory = modulesDirectory
    }
}

/// Finds `<kernel dir>/current/{vmlinux,modules}`. The kernel dir defaults to
/// `DATA_DIR/system/kernel`; errors name the script that prepares it.
public struct KernelLocator: Sendable {
    /// The script (relative to the repository root) that prepares a kernel directory.
    public static let setupScript = "scripts/setup-guest-kernel.sh"

    public let kernelDirectory: String

    public init(kernelDirectory: String) {
        self.kernelDirectory = kernelDirectory
    }

    /// Uses `dataDirectory/system/kernel`.
    public init(dataDirectory: String) {
        self.kernelDirectory = KernelLocator.defaultKernelDirectory(dataDirectory: dataDirectory)
    }

    public static func defaultKernelDirectory(dataDirectory: String) -> String {
        (dataDirectory.hasSuffix("/") ? String(dataDirectory.dropLast()) : dataDirectory) + "/system/kernel"
    }

    /// Resolves `current` and checks that vmlinux is an ELF and that modules.dep exists.
    public func locate() throws -> KernelFiles {
        let fix = "run `\(KernelLocator.setupScript) \(kernelDirectory)` (as root; it downloads Debian's linux-image package)"
        let current = kernelDirectory + "/current"
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: current) else {
            if Files.isDirectory(kernelDirectory) {
                throw GuestBootError.kernelNotFound("\(current) is missing or not a symlink; \(fix)")
            }
            throw GuestBootError.kernelNotFound("kernel directory \(kernelDirectory) does not exist; \(fix)")
        }
        let directory = target.hasPrefix("/") ? target : kernelDirectory + "/" + target
        let version = URL(fileURLWithPath: directory).lastPathComponent
        let vmlinux = directory + "/vmlinux"
        let modules = directory + "/modules"
        guard let handle = FileHandle(forReadingAtPath: vmlinux) else {
            throw GuestBootError.kernelNotFound("\(vmlinux) is missing; \(fix)")
        }
        let magic = [UInt8]((try? handle.read(upToCount: 4)) ?? Data())
        try? handle.close()
        guard magic == [0x7f, 0x45, 0x4c, 0x46] else {
            throw GuestBootError.kernelNotFound("\(vmlinux) is not an ELF vmlinux; \(fix)")
        }
        guard FileManager.default.fileExists(atPath: modules + "/modules.dep") else {
            throw GuestBootError.kernelNotFound("\(modules)/modules.dep is missing; \(fix)")
        }
        return KernelFiles(version: version, directory: directory, vmlinuxPath: vmlinux, modulesDirectory: modules)
    }
}
