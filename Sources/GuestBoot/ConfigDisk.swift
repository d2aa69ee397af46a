import Foundation
import Model

/// Everything the guest init needs to start one instance's app. A plain value: the Provisioner
/// fills it from the instance and image records.
public struct GuestConfig: Sendable, Equatable {
    public struct Network: Sendable, Equatable {
        /// Dotted IPv4 address of the guest, e.g. `10.100.0.7`.
        public var ip: String
        /// Subnet prefix length, e.g. 16.
        public var prefixLength: Int
        public var gateway: String
        public var dns: String

        public init(ip: String, prefixLength: Int, gateway: String, dns: String) {
            self.ip = ip
            self.prefixLength = prefixLength
            self.gateway = gateway
            self.dns = dns
        }
    }

    public struct Volume: Sendable, Equatable {
        public enum Mode: String, Sendable, Equatable {
            case readOnly = "ro"
            case readWrite = "rw"
            /// The volume's disk read-only as the lower layer, plus a private overlay disk.
            case overlay
        }

        /// Guest block device name of the volume's disk, e.g. `vdd`.
        public var device: String
        /// Absolute path inside the app's root (no `:` or whitespace).
        public var mountPath: String
        public var mode: Mode
        /// For `.overlay`: the device of the instance's private overlay disk, e.g. `vde`.
        public var overlayDevice: String?

        public init(device: String, mountPath: String, mode: Mode, overlayDevice: String? = nil) {
            self.device = device
            self.mountPath = mountPath
            self.mode = mode
            self.overlayDevice = overlayDevice
        }
    }

    public var instanceID: String
    public var instanceName: String
    /// The image reference as the user gave it (metadata only).
    public var image: String
    public var entrypoint: [String]
    public var cmd: [String]
    /// The image's working directory; empty means `/`.
    public var workdir: String
    /// The image's OCI env, `KEY=VALUE` strings, in image order.
    public var imageEnv: [String]
    /// The instance's env; overrides the image's.
    public var env: [String: String]
    public var network: Network?
    public var volumes: [Volume]
    /// Guest hostname; nil uses `instanceName` when it is a valid hostname.
    public var hostname: String?
    /// Whether the init starts the guest agent (exec, live volumes, readiness).
    public var agent: Bool

    public init(instanceID: String, instanceName: String, image: String, entrypoint: [String], cmd: [String],
                workdir: String = "/", imageEnv: [String] = [], env: [String: String] = [:], network: Network? = nil,
                volumes: [Volume] = [], hostname: String? = nil, agent: Bool = true) {
        self.agent = agent
        self.instanceID = instanceID
        self.instanceName = instanceName
        self.image = image
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.workdir = workdir
        self.imageEnv = imageEnv
        self.env = env
        self.network = network
        self.volumes = volumes
        self.hostname = hostname
    }
}

public struct EnvVar: Sendable, Equatable {
    public let key: String
    public let value: String

    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }
}

/// Builds the per-instance config disk (`/dev/vdc` in the guest): a small read-only ext4 holding
/// `config.sh` (sourced by the init) and `metadata.json`.
public enum ConfigDisk {
    /// `'…'` with each `'` written as `'\''`: the shell reads the value back byte for byte.
    public static func shellQuote(_ s: String) -> String {
        "'" + s.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
    }

    /// Words quoted one by one and joined with spaces, for `eval "set -- $LIST"`.
    public static func shellWordList(_ words: [String]) -> String {
        words.map(shellQuote).joined(separator: " ")
    }

    /// Image env first (in image order; entries without `=` or with a key the shell cannot
    /// export are skipped and reported), then the instance env: a key already present is
    /// overridden in place, new keys follow in sorted order. Instance keys must be
    /// `[A-Za-z_][A-Za-z0-9_]*`; no value may contain NUL.
    public static func mergedEnvironment(imageEnv: [String], instanceEnv: [String: String]) throws
        -> (env: [EnvVar], skippedImageKeys: [String]) {
        var order: [String] = []
        var values: [String: String] = [:]
        var skipped: [String] = []
        for entry in imageEnv {
            guard let eq = entry.firstIndex(of: "=") else { skipped.append(entry); continue }
            let key = String(entry[..<eq])
            let value = String(entry[entry.index(after: eq)...])
            guard Names.isValidEnvKey(key), !value.utf8.contains(0) else { skipped.append(key); continue }
            if values[key] == nil { order.append(key) }
            values[key] = value
        }
        for key in instanceEnv.keys.sorted() {
            guard Names.isValidEnvKey(key) else {
                throw GuestBootError.invalidConfig("env key '\(key)' is not [A-Za-z_][A-Za-z0-9_]*")
            }
            let value = instanceEnv[key] ?? ""
            guard !value.utf8.contains(0) else { throw GuestBootError.invalidConfig("env \(key) contains a NUL byte") }
            if values[key] == nil { order.append(key) }
            values[key] = value
        }
        return (order.map { EnvVar(key: $0, value: values[$0] ?? "") }, skipped)
    }

    /// The text of `config.sh`.
    public static func renderConfigScript(_ c: GuestConfig) throws -> String {
        for w in c.entrypoint + c.cmd where w.utf8.contains(0) {
            throw GuestBootError.invalidConfig("entrypoint/cmd word contains a NUL byte")
        }
        guard !(c.entrypoint + c.cmd).isEmpty else {
            throw GuestBootError.invalidConfig("the image has neither an entrypoint nor a cmd")
        }
        let workdir = c.workdir.isEmpty ? "/" : c.workdir
        guard workdir.hasPrefix("/"), !workdir.utf8.contains(0) else {
            throw GuestBootError.invalidConfig("working directory '\(workdir)' is not an absolute path")
        }
        let env = try mergedEnvironment(imageEnv: c.imageEnv, instanceEnv: c.env).env

        var s = "# hypeman guest config, sourced by /init. Generated; every value is single-quoted.\n"
        s += "ENTRYPOINT=" + shellQuote(shellWordList(c.entrypoint)) + "\n"
        s += "CMD=" + shellQuote(shellWordList(c.cmd)) + "\n"
        s += "WORKDIR=" + shellQuote(workdir) + "\n"
        if let host = hostname(for: c) { s += "GUEST_HOSTNAME=" + shellQuote(host) + "\n" }
        s += "GUEST_AGENT=" + (c.agent ? "1" : "0") + "\n"
        if let n = c.network {
            for (what, ip) in [("ip", n.ip), ("gateway", n.gateway), ("dns", n.dns)] where !isIPv4(ip) {
                throw GuestBootError.invalidConfig("network \(what) '\(ip)' is not a dotted IPv4 address")
            }
            guard (0 ... 32).contains(n.prefixLength) else {
                throw GuestBootError.invalidConfig("network prefix length \(n.prefixLength) is not 0…32")
            }
            s += "GUEST_IP=" + shellQuote(n.ip) + "\n"
            s += "GUEST_CIDR=" + shellQuote(String(n.prefixLength)) + "\n"
            s += "GUEST_GW=" + shellQuote(n.gateway) + "\n"
            s += "GUEST_DNS=" + shellQuote(n.dns) + "\n"
        }
        if !c.volumes.isEmpty {
            s += "VOLUME_MOUNTS=" + shellQuote(try volumeMounts(c.volumes)) + "\n"
        }
        s += "# The app's environment (image env, then instance env overriding it).\n"
        s += "hypeman_app_env() {\n"
        s += "    :\n"
        for e in env {
            s += "    export " + e.key + "=" + shellQuote(e.value) + "\n"
        }
        s += "}\n"
        return s
    }

    /// `dev:path:mode[:overlaydev] …` as the init parses it.
    public static func volumeMounts(_ volumes: [GuestConfig.Volume]) throws -> String {
        var seen: Set<String> = []
        return try volumes.map { v in
            guard isDeviceName(v.device) else { throw GuestBootError.invalidConfig("volume device '\(v.device)' is not vd[a-z]+") }
            guard let clean = Names.cleanAbsolutePath(v.mountPath), clean != "/" else {
                throw GuestBootError.invalidConfig("volume mount path '\(v.mountPath)' must be an absolute path below /")
            }
            guard !clean.unicodeScalars.contains(where: { $0 == ":" || $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7f }) else {
                throw GuestBootError.invalidConfig("volume mount path '\(v.mountPath)' contains ':', whitespace or a control character")
            }
            guard seen.insert(clean).inserted else { throw GuestBootError.invalidConfig("two volumes mount on \(clean)") }
            var item = "\(v.device):\(clean):\(v.mode.rawValue)"
            if v.mode == .overlay {
                guard let o = v.overlayDevice, isDeviceName(o), o != v.device else {
                    throw GuestBootError.invalidConfig("overlay volume on \(clean) needs an overlay device (vd[a-z]+)")
                }
                item += ":" + o
            }
            return item
        }.joined(separator: " ")
    }

    /// The text of `metadata.json`: instance_id, instance_name, image, entrypoint, cmd, workdir,
    /// env (merged), with keys in that order.
    public static func renderMetadataJSON(_ c: GuestConfig) throws -> String {
        let env = try mergedEnvironment(imageEnv: c.imageEnv, instanceEnv: c.env).env
        func str(_ s: String) -> String { jsonString(s) }
        func arr(_ a: [String]) -> String { "[" + a.map(str).joined(separator: ",") + "]" }
        let envObject = "{" + env.map { str($0.key) + ":" + str($0.value) }.joined(separator: ",") + "}"
        return "{" + [
            "\"instance_id\":" + str(c.instanceID),
            "\"instance_name\":" + str(c.instanceName),
            "\"image\":" + str(c.image),
            "\"entrypoint\":" + arr(c.entrypoint),
            "\"cmd\":" + arr(c.cmd),
            "\"workdir\":" + str(c.workdir.isEmpty ? "/" : c.workdir),
            "\"env\":" + envObject,
        ].joined(separator: ",") + "}\n"
    }

    /// Writes `config.ext4` at `path` (mode 0600: it holds the env): mkfs.ext4 -d from a temp
    /// directory beside it, no journal, sized to the content (at least 1 MiB). Replaces an
    /// existing file atomically.
    public static func build(_ c: GuestConfig, at path: String) throws {
        let script = try renderConfigScript(c)
        let metadata = try renderMetadataJSON(c)
        let mkfs = try HostTools.require("mkfs.ext4", package: "e2fsprogs")
        let parent = (path as NSString).deletingLastPathComponent
        let dir = try Files.makeTemporaryDirectory(in: parent.isEmpty ? "." : parent, prefix: ".config-disk")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let content = dir + "/root"
        try Files.makeDirectory(content)
        try Files.writeAtomically(Array(script.utf8), to: content + "/config.sh", mode: 0o600)
        try Files.writeAtomically(Array(metadata.utf8), to: content + "/metadata.json", mode: 0o600)
        let payload = script.utf8.count + metadata.utf8.count
        let kib = max(1024, ((payload * 2 + 512 * 1024) / 1024 + 63) / 64 * 64)
        let image = dir + "/config.ext4"
        try HostTools.run(mkfs, ["-q", "-F", "-t", "ext4", "-L", "hypeman-config", "-O", "^has_journal", "-m", "0",
                                 "-E", "root_owner=0:0", "-d", content, image, "\(kib)k"])
        guard chmod(image, 0o600) == 0 else { throw GuestBootError.io("cannot chmod \(image)") }
        try Files.rename(image, path)
    }

    static func hostname(for c: GuestConfig) -> String? {
        let h = c.hostname ?? c.instanceName
        let ok = !h.isEmpty && h.utf8.count <= 63 && h.utf8.allSatisfy {
            ($0 >= 97 && $0 <= 122) || ($0 >= 65 && $0 <= 90) || ($0 >= 48 && $0 <= 57) || $0 == 45
        }
        return ok ? h : nil
    }

    static func isDeviceName(_ s: String) -> Bool {
        let b = Array(s.utf8)
        return b.count >= 3 && b.count <= 5 && b[0] == 118 && b[1] == 100 && b[2...].allSatisfy { $0 >= 97 && $0 <= 122 }
    }

    static func isIPv4(_ s: String) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in
            !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isASCIIDigit) && (Int(p) ?? 256) <= 255
        }
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7f {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
