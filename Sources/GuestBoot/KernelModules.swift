import Foundation

/// One loadable module: its name (`-` normalised to `_`) and its path relative to the modules
/// directory, as written in modules.dep (e.g. `kernel/fs/ext4/ext4.ko`).
public struct KernelModule: Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public let relativePath: String
    public var description: String { relativePath }
}

/// What to load for a wanted set: the modules in load order (dependencies first), the wanted
/// names that are built into the kernel, and the wanted names this kernel does not have.
public struct ModulePlan: Sendable, Equatable {
    public let load: [KernelModule]
    public let builtin: [String]
    public let unavailable: [String]
}

/// A parsed `modules.dep` (depmod format: `path: dep dep …`, every transitive dependency listed,
/// in an order where loading from last to first works) plus `modules.builtin`.
public struct ModuleDependencies: Sendable {
    private var paths: [String: String] = [:]       // name -> relative path
    private var deps: [String: [String]] = [:]      // name -> dependency names as listed
    private var builtin: Set<String> = []

    /// `-` and `_` are interchangeable in module names; the canonical form uses `_`.
    public static func normalize(_ name: String) -> String {
        String(name.map { $0 == "-" ? "_" : $0 })
    }

    /// `kernel/fs/ext4/ext4.ko[.xz|.zst|.gz]` → `ext4`; nil when the path is not a module.
    public static func moduleName(forPath path: String) -> String? {
        let base = path.split(separator: "/").last.map(String.init) ?? path
        for suffix in [".ko.xz", ".ko.zst", ".ko.gz", ".ko"] where base.hasSuffix(suffix) && base.count > suffix.count {
            return normalize(String(base.dropLast(suffix.count)))
        }
        return nil
    }

    public init(modulesDep: String, modulesBuiltin: String = "") throws {
        for (n, raw) in modulesDep.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw GuestBootError.modules("modules.dep line \(n + 1) has no ':': \(line)")
            }
            let path = String(line[..<colon])
            guard let name = ModuleDependencies.moduleName(forPath: path) else {
                throw GuestBootError.modules("modules.dep line \(n + 1): \(path) is not a module path")
            }
            var names: [String] = []
            for d in line[line.index(after: colon)...].split(separator: " ", omittingEmptySubsequences: true) {
                guard let dn = ModuleDependencies.moduleName(forPath: String(d)) else {
                    throw GuestBootError.modules("modules.dep line \(n + 1): \(d) is not a module path")
                }
                names.append(dn)
            }
            paths[name] = path
            deps[name] = names
        }
        for raw in modulesBuiltin.split(separator: "\n") {
            if let name = ModuleDependencies.moduleName(forPath: raw.trimmingCharacters(in: .whitespaces)) {
                builtin.insert(name)
            }
        }
    }

    /// Reads `modules.dep` and (when present) `modules.builtin` from a modules directory.
    public init(modulesDirectory: String) throws {
        let dep = try Files.readText(modulesDirectory + "/modules.dep")
        let builtinPath = modulesDirectory + "/modules.builtin"
        let b = (try? Files.readText(builtinPath)) ?? ""
        try self.init(modulesDep: dep, modulesBuiltin: b)
    }

    public func isBuiltin(_ name: String) -> Bool { builtin.contains(ModuleDependencies.normalize(name)) }
    public func path(of name: String) -> String? { paths[ModuleDependencies.normalize(name)] }

    /// Load order for `wanted` (kept in the given order where dependencies allow): each module
    /// comes after everything it depends on, and appears once. A wanted module that is built in
    /// is listed in `builtin`; one this kernel lacks is listed in `unavailable`, or throws when it
    /// is in `required`.
    public func plan(wanted: [String], required: Set<String> = []) throws -> ModulePlan {
        var order: [KernelModule] = []
        var done: Set<String> = []
        var inProgress: Set<String> = []
        var builtinHits: [String] = []
        var missing: [String] = []

        func visit(_ name: String, chain: [String]) throws {
            if done.contains(name) { return }
            if inProgress.contains(name) {
                throw GuestBootError.modules("dependency cycle: \((chain + [name]).joined(separator: " -> "))")
            }
            guard let path = paths[name] else {
                if builtin.contains(name) { return }   // a dependency that is built in needs no loading
                throw GuestBootError.modules("\(chain.last ?? "?") depends on \(name), which modules.dep does not list")
            }
            inProgress.insert(name)
            // depmod lists dependencies so that loading from the last to the first works; each one
            // is visited through its own line, so the result is right whatever the listed order.
            for d in (deps[name] ?? []).reversed() { try visit(d, chain: chain + [name]) }
            inProgress.remove(name)
            done.insert(name)
            order.append(KernelModule(name: name, relativePath: path))
        }

        let requiredNorm = Set(required.map(ModuleDependencies.normalize))
        for w in wanted.map(ModuleDependencies.normalize) {
            if paths[w] != nil {
                try visit(w, chain: [])
            } else if builtin.contains(w) {
                if !builtinHits.contains(w) { builtinHits.append(w) }
            } else if requiredNorm.contains(w) {
                throw GuestBootError.modules("required module \(w) is neither in modules.dep nor built in")
            } else if !missing.contains(w) {
                missing.append(w)
            }
        }
        return ModulePlan(load: order, builtin: builtinHits, unavailable: missing)
    }
}
