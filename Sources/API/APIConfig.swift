#if canImport(Glibc)
import Glibc
#endif
import Model
import Store

/// Settings of the edge, read from the environment (see systemd/hypeman.env.example).
///
/// | key | default |
/// |---|---|
/// | DATA_DIR | /var/lib/hypeman |
/// | HYPEMAN_DB | DATA_DIR/hypeman.db |
/// | HYPEMAN_RUN_DIR | /run/hypeman (wake-up sockets, FastCGI sockets) |
/// | SYNC_WAIT_SECONDS | 60 — bound on waiting for a job before answering 202 |
/// | PULL_RESOLVE_WAIT_SECONDS | 15 — bound on waiting for a registry to resolve a tag |
/// | MAX_OVERLAY_SIZE | 100GB |
/// | MAX_VCPUS_PER_INSTANCE | 16 (0 = unlimited) |
/// | MAX_MEMORY_PER_INSTANCE | 32GB (0 = unlimited) |
/// | MAX_TOTAL_VCPUS / MAX_TOTAL_MEMORY | unlimited |
/// | MAX_TOTAL_VOLUME_STORAGE | unlimited (GB) |
/// | HYPEMAN_UPLOAD_DIR | DATA_DIR/uploads (volume archives staged for the Provisioner) |
/// | ACME_EMAIL, ACME_DNS_PROVIDER | unset: TLS ingresses are refused |
/// | AUTO_PULL | false — POST /instances pulls a missing image first |
public struct APIConfig: Sendable {
    public var dataDir: String
    public var dbPath: String
    public var runDir: String
    public var uploadDir: String
    public var syncWaitSeconds: Double
    public var resolveWaitSeconds: Double
    public var maxOverlaySize: Int64
    public var maxVCPUsPerInstance: Int
    public var maxMemoryPerInstance: Int64
    public var limits: InstanceLimits
    public var maxTotalVolumeGB: Int
    public var acmeConfigured: Bool
    public var threads: Int
    /// AUTO_PULL: POST /instances pulls a missing image first (default false, as the reference).
    public var autoPull: Bool

    public var provisionerSocket: String { runDir + "/provisioner.wake" }

    public static func fromEnvironment() throws(APIError) -> APIConfig {
        func env(_ k: String) -> String? {
            guard let p = getenv(k) else { return nil }
            let s = String(cString: p)
            return s.isEmpty ? nil : s
        }
        func size(_ k: String, _ d: String) throws(APIError) -> Int64 {
            let raw = env(k) ?? d
            guard let v = Size.parse(raw) else { throw APIError(.invalidRequest, "\(k)=\(raw) is not a size like 32GB") }
            return v
        }
        func int(_ k: String, _ d: Int) throws(APIError) -> Int {
            guard let raw = env(k) else { return d }
            guard let v = Int(raw), v >= 0 else { throw APIError(.invalidRequest, "\(k)=\(raw) is not a non-negative integer") }
            return v
        }
        let data = env("DATA_DIR") ?? "/var/lib/hypeman"
        let totalMem: Int64 = env("MAX_TOTAL_MEMORY") == nil ? 0 : try size("MAX_TOTAL_MEMORY", "0")
        return APIConfig(
            dataDir: data, dbPath: env("HYPEMAN_DB") ?? data + "/hypeman.db", runDir: env("HYPEMAN_RUN_DIR") ?? "/run/hypeman",
            uploadDir: env("HYPEMAN_UPLOAD_DIR") ?? data + "/uploads",
            syncWaitSeconds: Double(try int("SYNC_WAIT_SECONDS", 60)),
            resolveWaitSeconds: Double(try int("PULL_RESOLVE_WAIT_SECONDS", 15)),
            maxOverlaySize: try size("MAX_OVERLAY_SIZE", "100GB"),
            maxVCPUsPerInstance: try int("MAX_VCPUS_PER_INSTANCE", 16),
            maxMemoryPerInstance: try size("MAX_MEMORY_PER_INSTANCE", "32GB"),
            limits: .init(maxTotalVCPUs: try int("MAX_TOTAL_VCPUS", 0), maxTotalMemory: totalMem),
            maxTotalVolumeGB: try int("MAX_TOTAL_VOLUME_STORAGE", 0),
            acmeConfigured: env("ACME_EMAIL") != nil && env("ACME_DNS_PROVIDER") != nil,
            threads: try int("FCGI_THREADS", 16),
            autoPull: ["1", "true", "yes"].contains((env("AUTO_PULL") ?? "").lowercased()))
    }
}
