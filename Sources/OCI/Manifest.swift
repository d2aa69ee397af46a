import Foundation

/// An OCI platform (`os/architecture[/variant]`).
public struct Platform: Codable, Sendable, Equatable, CustomStringConvertible {
    public var architecture: String
    public var os: String
    public var variant: String?

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os; self.architecture = architecture; self.variant = variant
    }

    public static let linuxAMD64 = Platform(os: "linux", architecture: "amd64")

    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }
}

/// A content descriptor.
public struct Descriptor: Codable, Sendable, Equatable {
    public var mediaType: String
    public var digest: String
    public var size: Int64
    public var platform: Platform?
    public var urls: [String]?

    public init(mediaType: String, digest: String, size: Int64, platform: Platform? = nil) {
        self.mediaType = mediaType; self.digest = digest; self.size = size; self.platform = platform
    }
}

/// OCI index or Docker manifest list.
public struct ImageIndex: Decodable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
}

/// OCI image manifest or Docker v2 schema 2 manifest.
public struct ImageManifest: Decodable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
}

/// The parts of the image config blob we use.
public struct ImageConfig: Codable, Sendable, Equatable {
    public struct Run: Codable, Sendable, Equatable {
        public var Entrypoint: [String]?
        public var Cmd: [String]?
        public var Env: [String]?
        public var WorkingDir: String?
        public var User: String?
    }
    public var architecture: String?
    public var os: String?
    public var variant: String?
    public var config: Run?

    public var platform: Platform {
        Platform(os: os ?? "linux", architecture: architecture ?? "amd64", variant: variant)
    }

    /// `KEY=VAL` entries split at the first `=`; later duplicates win.
    public var environment: [String: String] {
        var env: [String: String] = [:]
        for item in config?.Env ?? [] {
            if let eq = item.firstIndex(of: "=") {
                env[String(item[..<eq])] = String(item[item.index(after: eq)...])
            } else if !item.isEmpty {
                env[item] = ""
            }
        }
        return env
    }
}

/// A manifest document as fetched: its bytes, type and digest (verified).
public struct FetchedManifest: Sendable {
    public var bytes: [UInt8]
    public var mediaType: String
    public var digest: String

    public enum Kind: Sendable { case index(ImageIndex), manifest(ImageManifest) }

    /// Decodes by media type; schema 1 and unknown types are `unsupportedMediaType`.
    public func decode() throws(OCIError) -> Kind {
        let data = Data(bytes)
        do {
            if MediaType.isIndex(mediaType) { return .index(try JSONDecoder().decode(ImageIndex.self, from: data)) }
            if MediaType.isManifest(mediaType) { return .manifest(try JSONDecoder().decode(ImageManifest.self, from: data)) }
        } catch {
            throw .invalidResponse("manifest \(digest) (\(mediaType)) is not valid JSON of its type: \(error)")
        }
        throw .unsupportedMediaType("manifest \(digest) has type \(mediaType); only OCI and Docker v2 schema 2 images are supported")
    }

    /// Works out the media type of a manifest read back without a Content-Type (from the cache).
    static func inferMediaType(_ bytes: [UInt8]) -> String? {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else { return nil }
        if let t = obj["mediaType"] as? String, !t.isEmpty { return t }
        if obj["manifests"] != nil { return MediaType.ociIndex }
        if obj["layers"] != nil && obj["config"] != nil { return MediaType.ociManifest }
        return nil
    }
}

public enum PlatformSelector {
    /// Picks the manifest for `want` from an index. Only manifest-typed entries count (attestations
    /// such as `unknown/unknown` are skipped). A variant is matched when asked for; otherwise an entry
    /// without a variant is preferred (for amd64, then `v1`..`v4` in order, for arm64 `v8`).
    public static func select(_ index: ImageIndex, for want: Platform) throws(OCIError) -> Descriptor {
        let candidates = index.manifests.filter { d in
            guard MediaType.isManifest(d.mediaType) || d.mediaType.isEmpty, let p = d.platform else { return false }
            return p.os == want.os && p.architecture == want.architecture
        }
        if let v = want.variant {
            if let hit = candidates.first(where: { $0.platform?.variant == v }) { return hit }
        } else {
            if let hit = candidates.first(where: { $0.platform?.variant == nil }) { return hit }
            let order = ["v1", "v2", "v3", "v4", "v8"]
            for v in order { if let hit = candidates.first(where: { $0.platform?.variant == v }) { return hit } }
            if let hit = candidates.first { return hit }
        }
        let have = index.manifests.compactMap { $0.platform?.description }
        throw .noMatchingPlatform("the index has no \(want) image (it has: \(have.isEmpty ? "none" : have.joined(separator: ", ")))")
    }
}
