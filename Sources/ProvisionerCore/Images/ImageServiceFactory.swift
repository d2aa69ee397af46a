import Foundation

/// The image service this build provides (nil when none: pulls then fail with dependency_missing).
func makeImageService(_ config: ProvisionerConfig) -> (any ImageService)? {
    nil
}
