import Foundation

/// The image service of this Provisioner: OCI registries → ext4 disks (nil only when it cannot
/// be set up, e.g. an unreadable credentials file; pulls then fail with dependency_missing).
func makeImageService(_ config: ProvisionerConfig) -> (any ImageService)? {
    do {
        var c = OCIImageServiceConfig(dataDir: config.dataDir, insecureRegistries: Set(config.insecureRegistries),
                                      authFile: config.registryAuthFile)
        c.limitImageSize(to: config.maxImageBytes)
        return try OCIImageService(config: c)
    } catch {
        Log("prov.images").error("image service unavailable", ["error": "\(error)"])
        return nil
    }
}
