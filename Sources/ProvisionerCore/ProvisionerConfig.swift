import Foundation
import Model

/// Settings of the Provisioner, read from the environment (see systemd/hypeman.env.example).
public struct ProvisionerConfig: Sendable {
    public var dataDir: String
    public var dbPath: String
    public var runDir: String
    /// Image builds running at once (MAX_CONCURRENT_BUILDS, default 1).
    public var maxConcurrentBuilds: Int
    /// Instance/volume jobs running at once (PROVISIONER_WORKERS, default 4).
    public var workers: Int
    /// Registries reachable over plain HTTP (INSECURE_REGISTRIES, comma separated host:port).
    public var insecureRegistries: [String]
    /// Docker-style credentials file (REGISTRY_AUTH_FILE), if any.
    public var registryAuthFile: String?
    /// Fallback poll period when no wake-up arrives (seconds).
    public var pollSeconds: Double

    public var wakeSocket: String { runDir + "/provisioner.wake" }
    public var guestsDir: String { dataDir + "/guests" }
    public var volumesDir: String { dataDir + "/volumes" }

    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> ProvisionerConfig {
        func v(_ k: String) -> String? { env[k].flatMap { $0.isEmpty ? nil : $0 } }
        func int(_ k: String, _ d: Int) throws -> Int {
            guard let s = v(k) else { return d }
            guard let i = Int(s), i > 0 else { throw APIError(.invalidRequest, "\(k)=\(s) must be a positive integer") }
            return i
        }
        let data = v("DATA_DIR") ?? "/var/lib/hypeman"
        return ProvisionerConfig(
            dataDir: data, dbPath: v("HYPEMAN_DB") ?? data + "/hypeman.db", runDir: v("HYPEMAN_RUN_DIR") ?? "/run/hypeman",
            maxConcurrentBuilds: try int("MAX_CONCURRENT_BUILDS", 1), workers: try int("PROVISIONER_WORKERS", 4),
            insecureRegistries: (v("INSECURE_REGISTRIES") ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty },
            registryAuthFile: v("REGISTRY_AUTH_FILE"), pollSeconds: 1)
    }
}
