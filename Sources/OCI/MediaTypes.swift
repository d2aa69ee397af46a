import Foundation

/// Media types of the distribution API and image formats we read.
public enum MediaType {
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let dockerList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    public static let dockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
    public static let dockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"

    /// Sent on every manifest request. Registry 2.8 answers 404 for OCI manifests unless an OCI type is listed.
    public static let manifestAccept = [ociIndex, ociManifest, dockerList, dockerManifest].joined(separator: ", ")

    public static func isIndex(_ t: String) -> Bool { t == ociIndex || t == dockerList }
    public static func isManifest(_ t: String) -> Bool { t == ociManifest || t == dockerManifest }
    public static func isConfig(_ t: String) -> Bool { t == ociConfig || t == dockerConfig }

    /// Compression of a layer media type, or nil when we do not unpack it.
    public static func layerCompression(_ t: String) -> LayerCompression? {
        switch t {
        case ociLayer, "application/vnd.docker.image.rootfs.diff.tar": return LayerCompression.none
        case ociLayerGzip, dockerLayerGzip: return .gzip
        case ociLayerZstd: return .zstd
        default: return nil
        }
    }

    /// Strips parameters: `application/json; charset=utf-8` → `application/json`.
    static func base(_ contentType: String) -> String {
        let head = contentType.split(separator: ";", maxSplits: 1).first.map(String.init) ?? contentType
        return head.trimmingCharacters(in: .whitespaces).lowercased()
    }
}

public enum LayerCompression: String, Sendable { case none, gzip, zstd }
