import Foundation
import HTTPFetch
import Model
import Synchronization

/// A pulled image: everything is in the blob store, verified.
public struct PulledImage: Sendable {
    /// The digest the pull started from (an index or a manifest).
    public var digest: String
    /// Manifest documents read, top first (index, then the platform manifest).
    public var manifestDigests: [String]
    public var configDigest: String
    public var config: ImageConfig
    public var layers: [Descriptor]
    public var platform: Platform
    /// Bytes of the distinct layer blobs (bounded and summed checked).
    public var layerBytes: Int64 = 0

    /// Every blob this image needs in the cache (manifests, config, layers).
    public var blobDigests: [String] { manifestDigests + [configDigest] + layers.map(\.digest) }

    /// Layer files in application order.
    public func layerSources(in store: BlobStore) throws(OCIError) -> [LayerSource] {
        var out: [LayerSource] = []
        for l in layers {
            guard let c = MediaType.layerCompression(l.mediaType) else { throw .unsupportedMediaType("layer type \(l.mediaType)") }
            out.append(LayerSource(path: try store.path(for: l.digest), compression: c, label: "layer \(l.digest)"))
        }
        return out
    }
}

/// Bounds on the sizes a registry declares, checked before anything is fetched: a descriptor's
/// `size` is untrusted input (it also caps the download of that blob).
public struct PullLimits: Sendable, Equatable {
    /// Largest single layer blob.
    public var maxBlobBytes: Int64
    /// Largest sum of an image's (distinct) layer blobs.
    public var maxImageBytes: Int64
    /// Largest image config blob (it is read into memory).
    public var maxConfigBytes: Int64

    public init(maxBlobBytes: Int64 = 32 << 30, maxImageBytes: Int64 = 32 << 30, maxConfigBytes: Int64 = 8 << 20) {
        self.maxBlobBytes = maxBlobBytes; self.maxImageBytes = maxImageBytes; self.maxConfigBytes = maxConfigBytes
    }
}

/// Pulls an image into a `BlobStore`: manifests (cached by digest), platform selection, config,
/// then layers in parallel (bounded), each streamed, verified and stored once.
public final class ImagePuller: Sendable {
    public let registry: RegistryClient
    public let store: BlobStore
    public let parallelLayers: Int
    public let platform: Platform
    public let limits: PullLimits

    public init(registry: RegistryClient, store: BlobStore, parallelLayers: Int = 3, platform: Platform = .linuxAMD64,
                limits: PullLimits = PullLimits()) {
        self.registry = registry; self.store = store
        self.parallelLayers = max(1, parallelLayers); self.platform = platform; self.limits = limits
    }

    /// Checks one descriptor's declared size: not negative, not above `max`.
    static func checkSize(_ d: Descriptor, max: Int64, what: String) throws(OCIError) {
        guard d.size >= 0 else { throw .invalidResponse("\(what) \(d.digest) declares a negative size (\(d.size))") }
        guard d.size <= max else {
            throw .limitExceeded("\(what) \(d.digest) declares \(d.size) bytes, above the limit of \(max) bytes")
        }
    }

    /// Validates every size a manifest declares against `limits` and returns the total of its
    /// distinct layers (checked: an overflow or a total above `maxImageBytes` is `.limitExceeded`).
    public static func checkedLayerTotal(_ m: ImageManifest, limits: PullLimits) throws(OCIError) -> Int64 {
        try checkSize(m.config, max: limits.maxConfigBytes, what: "config")
        var seen = Set<String>()
        var total: Int64 = 0
        for l in m.layers {
            try checkSize(l, max: limits.maxBlobBytes, what: "layer")
            guard seen.insert(l.digest).inserted else { continue }
            guard let t = ByteMath.add(total, l.size), t <= limits.maxImageBytes else {
                throw .limitExceeded("the image's layers add up to more than \(limits.maxImageBytes) bytes")
            }
            total = t
        }
        return total
    }

    /// Pulls `ref` (at `digest` when given, else its tag). `progress(done, total)` reports layer bytes
    /// (cached layers count as done) at most every 100 ms and when a layer completes; it may be
    /// called from several threads. `pin` is told each blob digest before it is fetched (for GC).
    public func pull(_ ref: ImageReference, digest: String? = nil,
                     progress: (@Sendable (Int64, Int64) -> Void)? = nil,
                     pin: (@Sendable (String) -> Void)? = nil) throws(OCIError) -> PulledImage {
        let http: HTTPClient
        do { http = try HTTPClient() } catch { throw .io("cannot start an HTTP client: \(error)") }
        let topRef = digest ?? ref.digest ?? ref.manifestReference
        var top = try manifest(ref, reference: topRef, http: http, pin: pin)
        var manifestDigests = [top.digest]
        if case .index(let index) = try top.decode() {
            let chosen = try PlatformSelector.select(index, for: platform)
            try Self.checkSize(chosen, max: Int64(registry.options.maxManifestBytes), what: "manifest")
            top = try manifest(ref, reference: chosen.digest, http: http, pin: pin)
            manifestDigests.append(top.digest)
        }
        guard case .manifest(let m) = try top.decode() else {
            throw .unsupportedMediaType("\(top.digest): an index inside an index is not supported")
        }
        guard MediaType.isConfig(m.config.mediaType) else {
            throw .unsupportedMediaType("config type \(m.config.mediaType) (not a container image)")
        }
        for l in m.layers where MediaType.layerCompression(l.mediaType) == nil {
            throw .unsupportedMediaType("layer \(l.digest) has type \(l.mediaType)")
        }
        let layerBytes = try Self.checkedLayerTotal(m, limits: limits)
        pin?(m.config.digest)
        try registry.fetchBlob(ref, descriptor: m.config, into: store, http: http)
        let configBytes = try store.read(m.config.digest, limit: Int(limits.maxConfigBytes))
        let config: ImageConfig
        do { config = try JSONDecoder().decode(ImageConfig.self, from: Data(configBytes)) } catch {
            throw .invalidResponse("config \(m.config.digest) is not an image config: \(error)")
        }
        let got = config.platform
        guard got.os == platform.os, got.architecture == platform.architecture else {
            throw .noMatchingPlatform("\(ref) is a \(got) image, \(platform) is needed")
        }
        for l in m.layers { pin?(l.digest) }
        try fetchLayers(ref, m.layers, progress: progress)
        return PulledImage(digest: manifestDigests[0], manifestDigests: manifestDigests, configDigest: m.config.digest,
                           config: config, layers: m.layers, platform: got, layerBytes: layerBytes)
    }

    /// A manifest by digest from the cache, else from the registry (then cached); by tag always
    /// from the registry.
    private func manifest(_ ref: ImageReference, reference: String, http: HTTPClient,
                          pin: (@Sendable (String) -> Void)?) throws(OCIError) -> FetchedManifest {
        if reference.hasPrefix("sha256:") {
            pin?(reference)
            if store.contains(reference), let bytes = try? store.read(reference),
               let type = FetchedManifest.inferMediaType(bytes) {
                return FetchedManifest(bytes: bytes, mediaType: type, digest: reference)
            }
        }
        let m = try registry.fetchManifest(ref, reference: reference, http: http)
        pin?(m.digest)
        try store.put(m.bytes, digest: m.digest)
        return m
    }

    private func fetchLayers(_ ref: ImageReference, _ layers: [Descriptor],
                             progress: (@Sendable (Int64, Int64) -> Void)?) throws(OCIError) {
        var seen = Set<String>()
        let unique = layers.filter { seen.insert($0.digest).inserted }
        // Sizes were bounded by `checkedLayerTotal`; the meter sums them checked all the same.
        let meter = ProgressMeter(sizes: unique.map { max(0, $0.size) }, report: progress)
        for (i, l) in unique.enumerated() where store.contains(l.digest) { meter.complete(i) }
        meter.flush()
        let registry = self.registry, store = self.store
        let todo = unique.indices.filter { !store.contains(unique[$0].digest) }
        let failure = Mutex<OCIError?>(nil)
        Parallel.run(count: todo.count, width: parallelLayers) { k in
            if failure.withLock({ $0 != nil }) { return }
            let i = todo[k]
            do throws(OCIError) {
                let http: HTTPClient
                do { http = try HTTPClient() } catch { throw .io("cannot start an HTTP client: \(error)") }
                try registry.fetchBlob(ref, descriptor: unique[i], into: store, http: http) { meter.update(i, $0) }
                meter.complete(i)
            } catch {
                failure.withLock { if $0 == nil { $0 = error } }
            }
        }
        if let e = failure.withLock({ $0 }) { throw e }
        meter.flush()
    }
}

/// Sums per-layer byte counts and reports them, throttled.
final class ProgressMeter: Sendable {
    private struct State { var done: [Int64]; var last: ContinuousClock.Instant? }
    private let state: Mutex<State>
    private let sizes: [Int64]
    private let total: Int64
    private let report: (@Sendable (Int64, Int64) -> Void)?

    init(sizes: [Int64], report: (@Sendable (Int64, Int64) -> Void)?) {
        self.sizes = sizes
        self.total = ByteMath.sum(sizes) ?? Int64.max
        self.report = report
        state = Mutex(State(done: Array(repeating: 0, count: sizes.count), last: nil))
    }

    func update(_ i: Int, _ bytes: Int64) { emit(force: false) { $0.done[i] = min(bytes, self.sizes[i]) } }
    func complete(_ i: Int) { emit(force: true) { $0.done[i] = self.sizes[i] } }
    func flush() { emit(force: true) { _ in } }

    private func emit(force: Bool, _ change: (inout State) -> Void) {
        let now = ContinuousClock.now
        let value: Int64? = state.withLock { s in
            change(&s)
            if !force, let last = s.last, now - last < .milliseconds(100) { return nil }
            s.last = now
            return ByteMath.sum(s.done) ?? Int64.max
        }
        if let value { report?(value, total) }
    }
}

/// Runs `count` work items on up to `width` threads and waits for all of them.
enum Parallel {
    static func run(count: Int, width: Int, _ body: @escaping @Sendable (Int) -> Void) {
        guard count > 0 else { return }
        if count == 1 || width <= 1 { for i in 0..<count { body(i) }; return }
        let next = Mutex(0)
        let group = DispatchGroup()
        for _ in 0..<min(width, count) {
            group.enter()
            let t = Thread {
                while true {
                    let i: Int = next.withLock { n in defer { n += 1 }; return n }
                    if i >= count { break }
                    body(i)
                }
                group.leave()
            }
            t.stackSize = 1 << 20
            t.start()
        }
        group.wait()
    }
}
