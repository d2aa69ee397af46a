import Digest
import Foundation

public enum InitramfsCompression: String, Sendable, CaseIterable {
    /// Plain newc cpio (`initramfs-<hash>.cpio`).
    case none
    /// `gzip -n` (`initramfs-<hash>.cpio.gz`); every Debian kernel has RD_GZIP built in.
    case gzip

    var fileSuffix: String { self == .gzip ? ".cpio.gz" : ".cpio" }
}

/// The result of `InitramfsBuilder.build`.
public struct InitramfsImage: Sendable, Equatable {
    /// `<out>/initramfs-<hash16>.cpio[.gz]`.
    public let path: String
    /// First 16 hex digits of the SHA-256 over every input (init text, busybox, modules, options).
    public let hash: String
    /// False when a file with this hash already existed and was reused.
    public let built: Bool
    /// Which modules went in, in load order, and which wanted ones were built in or absent.
    public let modules: ModulePlan
}

/// Builds the guest initramfs: static busybox with applet symlinks, the kernel modules for disk,
/// network, vsock and overlay boot in dependency order, and our `/init` (`InitScript.text`).
/// The file is named by the hash of its inputs and rebuilt only when missing.
public struct InitramfsBuilder: Sendable {
    /// Wanted modules, in the order the init should load them where dependencies allow. Built-in
    /// ones are skipped; absent ones are skipped unless in `requiredModules`. Keep in sync with
    /// WANTED_MODULES in scripts/setup-guest-kernel.sh (which copies only these and their
    /// dependencies). crc32c_generic is listed before ext4 because ext4/jbd2 reach crc32c through
    /// the crypto API (a softdep that plain insmod does not follow). button and evdev let busybox
    /// acpid see the ACPI power button.
    public static let defaultModules = [
        "virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
        "crc32c_generic", "crc16", "mbcache", "jbd2", "ext4", "overlay",
        "vsock", "vmw_vsock_virtio_transport", "virtio_mem", "button", "evdev",
    ]
    /// Without these the init cannot mount its disks.
    public static let requiredModules: Set<String> = ["virtio_blk", "ext4", "overlay"]

    /// Bump when the archive layout changes, so old files are not reused.
    static let layoutVersion = "hypeman-initramfs-v2"

    public var kernel: KernelFiles
    public var busyboxPath: String
    public var modules: [String]
    public var compression: InitramfsCompression
    /// The statically linked guest agent to put at /bin/hypeman-agent; nil builds an initramfs
    /// without one (the init then says so and guests have no exec).
    public var agentPath: String?

    public init(kernel: KernelFiles, busyboxPath: String = "/bin/busybox", modules: [String] = InitramfsBuilder.defaultModules,
                compression: InitramfsCompression = .gzip, agentPath: String? = nil) {
        self.kernel = kernel
        self.agentPath = agentPath
        self.busyboxPath = busyboxPath
        self.modules = modules
        self.compression = compression
    }

    /// Returns `<outputDirectory>/initramfs-<hash16>.cpio[.gz]`, building it first when missing.
    /// Safe to call concurrently: the file appears atomically (temp file + rename).
    public func build(outputDirectory: String) throws -> InitramfsImage {
        let inputs = try gatherInputs()
        let hash = inputs.hash
        let path = outputDirectory + "/initramfs-" + hash + compression.fileSuffix
        if FileManager.default.fileExists(atPath: path) {
            return InitramfsImage(path: path, hash: hash, built: false, modules: inputs.plan)
        }
        try Files.makeDirectory(outputDirectory)
        let archive = try makeArchive(inputs)
        switch compression {
        case .none:
            try Files.writeAtomically(archive, to: path)
        case .gzip:
            let gzip = try HostTools.require("gzip", package: "gzip")
            let tmp = outputDirectory + "/.initramfs-\(hash)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0 ... .max)).cpio"
            guard FileManager.default.createFile(atPath: tmp, contents: Data(archive), attributes: [.posixPermissions: 0o644]) else {
                throw GuestBootError.io("cannot write \(tmp)")
            }
            defer { try? FileManager.default.removeItem(atPath: tmp); try? FileManager.default.removeItem(atPath: tmp + ".gz") }
            try HostTools.run(gzip, ["-n", "-f", tmp])     // -n: no name or timestamp, so output is reproducible
            try Files.rename(tmp + ".gz", path)
        }
        return InitramfsImage(path: path, hash: hash, built: true, modules: inputs.plan)
    }

    /// The uncompressed newc archive (what `build` writes before compression).
    public func archive() throws -> [UInt8] {
        try makeArchive(gatherInputs())
    }

    struct Inputs {
        var busybox: [UInt8]
        var agent: [UInt8]?
        var plan: ModulePlan
        var moduleBytes: [[UInt8]]
        var moduleList: String
        var hash: String
    }

    func gatherInputs() throws -> Inputs {
        let busybox = try Files.read(busyboxPath)
        try InitramfsBuilder.checkStaticELF(busybox, path: busyboxPath)
        var agent: [UInt8]? = nil
        if let agentPath {
            let bytes = try Files.read(agentPath)
            try InitramfsBuilder.checkStaticELF(bytes, path: agentPath, fix: "build it with `swift build --product hypeman-agent` (it links -static-executable)")
            agent = bytes
        }
        let deps = try ModuleDependencies(modulesDirectory: kernel.modulesDirectory)
        let plan = try deps.plan(wanted: modules, required: InitramfsBuilder.requiredModules)
        var moduleBytes: [[UInt8]] = []
        for m in plan.load {
            guard m.relativePath.hasSuffix(".ko") else {
                throw GuestBootError.modules("\(m.relativePath) is compressed; rerun \(KernelLocator.setupScript), which stores plain .ko files")
            }
            moduleBytes.append(try Files.read(kernel.modulesDirectory + "/" + m.relativePath))
        }
        let moduleList = plan.load.map { $0.relativePath + "\n" }.joined()

        let h = SHA256Hasher()
        func field(_ bytes: [UInt8]) {
            h.update(String(bytes.count) + ":")
            h.update(bytes)
        }
        field(Array(InitramfsBuilder.layoutVersion.utf8))
        field(Array(compression.rawValue.utf8))
        field(Array(InitScript.text.utf8))
        field(Array(InitScript.powerButtonHandler.utf8))
        field(Array(InitScript.applets.joined(separator: " ").utf8))
        field(busybox)
        field(agent ?? [])
        field(Array(moduleList.utf8))
        for (m, b) in zip(plan.load, moduleBytes) {
            field(Array(m.relativePath.utf8))
            field(b)
        }
        let hash = String(h.finishHex().prefix(16))
        return Inputs(busybox: busybox, agent: agent, plan: plan, moduleBytes: moduleBytes, moduleList: moduleList, hash: hash)
    }

    func makeArchive(_ inputs: Inputs) throws -> [UInt8] {
        var w = CPIOWriter(mtime: 0)
        for d in ["bin", "sbin", "dev", "proc", "sys", "run", "tmp", "etc", "etc/hypeman", "etc/acpi", "etc/acpi/PWRF",
                  "lower", "overlay", "config", "newroot", "lib", "lib/modules"] {
            try w.addDirectory(d, mode: d == "tmp" ? 0o1777 : 0o755)
        }
        try w.addCharacterDevice("dev/console", major: 5, minor: 1, mode: 0o600)
        try w.addCharacterDevice("dev/null", major: 1, minor: 3, mode: 0o666)
        try w.addFile("bin/busybox", contents: inputs.busybox, mode: 0o755)
        if let agent = inputs.agent { try w.addFile("bin/hypeman-agent", contents: agent, mode: 0o755) }
        for a in InitScript.applets {
            try w.addSymlink("bin/" + a, target: "busybox")
        }
        try w.addFile("init", contents: Array(InitScript.text.utf8), mode: 0o755)
        try w.addFile(InitScript.powerButtonHandlerPath, contents: Array(InitScript.powerButtonHandler.utf8), mode: 0o755)
        try w.addFile(InitScript.moduleListPath, contents: Array(inputs.moduleList.utf8), mode: 0o644)
        var dirs: Set<String> = ["lib/modules"]
        for (m, bytes) in zip(inputs.plan.load, inputs.moduleBytes) {
            let full = "lib/modules/" + m.relativePath
            try CPIOWriter.validate(full)
            var parents: [String] = []
            var p = full
            while let slash = p.lastIndex(of: "/") {
                p = String(p[..<slash])
                if dirs.contains(p) { break }
                parents.append(p)
            }
            for d in parents.reversed() {
                try w.addDirectory(d)
                dirs.insert(d)
            }
            try w.addFile(full, contents: bytes, mode: 0o644)
        }
        return w.finish()
    }

    /// The init runs before any library exists, so busybox must be static: an x86-64 ELF without
    /// a PT_INTERP program header.
    static func checkStaticELF(_ b: [UInt8], path: String,
                               fix: String = "install the static busybox with `apt-get install busybox-static`") throws {
        func u16(_ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        func u64(_ o: Int) -> Int { u32(o) | u32(o + 4) << 32 }
        guard b.count > 64, b[0] == 0x7f, b[1] == 0x45, b[2] == 0x4c, b[3] == 0x46, b[4] == 2, u16(18) == 62 else {
            throw GuestBootError.toolMissing("\(path) is not an x86-64 ELF binary; \(fix)")
        }
        let phoff = u64(0x20), phentsize = u16(0x36), phnum = u16(0x38)
        guard phoff > 0, phoff <= b.count, phentsize >= 4, phnum * phentsize <= b.count - phoff else {
            throw GuestBootError.toolMissing("\(path) has a malformed ELF header; \(fix)")
        }
        for i in 0 ..< phnum where u32(phoff + i * phentsize) == 3 {
            throw GuestBootError.toolMissing("\(path) is dynamically linked; \(fix)")
        }
    }
}
