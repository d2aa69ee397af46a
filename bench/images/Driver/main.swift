// Drives OCIImageService end to end (built by bench/images/run.sh in a scratch package).
//   images-driver build  DATA_DIR INSECURE_HOSTPORT REF      → prints seconds and the disk
//   images-driver selftest DATA_DIR INSECURE_HOSTPORT        → checks build/record/GC/failure paths
import Foundation
import Model
import OCI
import ProvisionerImages

func fail(_ msg: String) -> Never {
    FileHandle.standardError.write(Data("FAIL: \(msg)\n".utf8))
    exit(1)
}

func now() -> Double { Date().timeIntervalSince1970 }

func sh(_ cmd: String) -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", cmd]
    let pipe = Pipe()
    p.standardOutput = pipe; p.standardError = pipe
    do { try p.run() } catch { return (-1, "\(error)") }
    let d = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: d, as: UTF8.self))
}

let args = CommandLine.arguments
guard args.count >= 4 else { fail("usage: images-driver build|selftest DATA_DIR HOSTPORT [REF]") }
let (mode, dataDir, host) = (args[1], args[2], args[3])
let service: OCIImageService
do { service = try OCIImageService(config: OCIImageServiceConfig(dataDir: dataDir, insecureRegistries: [host], authFile: "/nonexistent")) }
catch { fail("init: \(error)") }

func build(_ name: String) throws(APIError) -> (BuiltImage, [ImageBuildProgress]) {
    let ref = try ImageReference.parse(name)
    let digest = try service.resolve(ref)
    let seen = ProgressLog()
    let img = try service.build(ref, digest: digest) { seen.add($0) }
    return (img, seen.all)
}

final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [ImageBuildProgress] = []
    func add(_ p: ImageBuildProgress) { lock.lock(); items.append(p); lock.unlock() }
    var all: [ImageBuildProgress] { lock.lock(); defer { lock.unlock() }; return items }
    private var first: Double?
    func mark(_ t: Double) { lock.lock(); if first == nil { first = t }; lock.unlock() }
    var firstMark: Double? { lock.lock(); defer { lock.unlock() }; return first }
}

switch mode {
case "build":
    guard args.count >= 5 else { fail("build needs REF") }
    do {
        let t0 = now()
        let ref = try ImageReference.parse(args[4])
        let digest = try service.resolve(ref)
        let t1 = now()
        let converting = ProgressLog()
        let img = try service.build(ref, digest: digest) { p in
            if p.phase == .converting { converting.mark(now()) }
        }
        let t3 = now()
        let t2 = converting.firstMark ?? t3
        print(String(format: "ours: %.3f s (resolve %.3f, pull %.3f, unpack+ext4 %.3f)  disk %@ (%lld bytes)",
                     t3 - t0, t1 - t0, t2 - t1, t3 - t2, img.diskPath, img.sizeBytes))
    } catch { fail("\(error)") }

case "unpack":   // images-driver unpack DEST HOST LAYER... (times LayerUnpacker alone)
    do {
        let t0 = now()
        let u = try LayerUnpacker(root: dataDir)
        u.inflateOnThread = ProcessInfo.processInfo.environment["INLINE"] == nil
        for l in args[4...] { try u.apply(LayerSource(path: l, compression: .gzip)) }
        try u.finish()
        let st = u.stats
        print(String(format: "unpack: %.3f s, %d entries, %lld bytes", now() - t0, st.entries, st.bytes))
    } catch { fail("\(error)") }

case "selftest":
    do {
        // A 3-layer image: progress, record, disk contents (whiteouts applied), config.
        let (img, progress) = try build("\(host)/test/layers:latest")
        guard progress.first?.phase == .pulling, progress.last?.phase == .converting else { fail("progress phases \(progress)") }
        guard let last = progress.last, last.bytesDone == last.bytesTotal, last.bytesTotal > 0 else { fail("progress totals \(progress)") }
        guard img.platform == "linux/amd64", img.cmd == ["/bin/sh"] else { fail("config \(img)") }
        let fsck = sh("e2fsck -fn \(img.diskPath)")
        guard fsck.0 == 0 else { fail("e2fsck: \(fsck.1)") }
        let ls = sh("debugfs -R 'ls /opaque' \(img.diskPath) 2>/dev/null").1
        guard ls.contains("new"), !ls.contains("lower-a"), !ls.contains(" sub ") else { fail("opaque dir on disk: \(ls)") }
        let keep = sh("debugfs -R 'cat /keep' \(img.diskPath) 2>/dev/null").1
        guard keep == "layer 2\n" else { fail("/keep on disk is \(keep)") }
        let hex = String(img.digest.dropFirst(7))
        guard FileManager.default.fileExists(atPath: "\(dataDir)/images/\(hex)/image.json") else { fail("no record") }
        let builds = (try? FileManager.default.contentsOfDirectory(atPath: "\(dataDir)/system/builds")) ?? []
        guard builds.isEmpty else { fail("build leftovers \(builds)") }

        // busybox: entrypoint/cmd/env/workdir; a second build is the cached result.
        let (bb, _) = try build("\(host)/test/busybox:latest")
        guard bb.entrypoint == ["/bin/sh"], bb.cmd == ["/app.sh"], bb.env["GREETING"] == "hello", bb.workingDir == "/srv" else { fail("busybox \(bb)") }
        let t0 = now()
        let (again, _) = try build("\(host)/test/busybox:latest")
        guard again == bb, now() - t0 < 1 else { fail("rebuild was not served from the disk") }

        // Failure leaves nothing: a digest that does not exist.
        let missing = try ImageReference.parse("\(host)/test/busybox:latest")
        do {
            _ = try service.build(missing, digest: "sha256:" + String(repeating: "1", count: 64)) { _ in }
            fail("missing digest built")
        } catch { guard error.code == .notFound else { fail("missing digest: \(error)") } }
        let images = try FileManager.default.contentsOfDirectory(atPath: "\(dataDir)/images")
        guard Set(images) == [hex, String(bb.digest.dropFirst(7))] else { fail("images after failure: \(images)") }
        do { _ = try service.resolve(try ImageReference.parse("\(host)/test/busybox:nope")); fail("resolved a missing tag") }
        catch { guard error.code == .notFound else { fail("missing tag: \(error)") } }

        // GC: keep busybox → layers' disk and unshared blobs go; keep nothing → all go.
        let blobsBefore = try FileManager.default.contentsOfDirectory(atPath: "\(dataDir)/system/oci-cache/blobs/sha256").count
        try service.collectGarbage(keepDigests: [bb.digest])
        guard !FileManager.default.fileExists(atPath: img.diskPath), FileManager.default.fileExists(atPath: bb.diskPath) else { fail("GC kept/removed the wrong disk") }
        let blobsMid = try FileManager.default.contentsOfDirectory(atPath: "\(dataDir)/system/oci-cache/blobs/sha256").count
        guard blobsMid == 3, blobsBefore > blobsMid else { fail("GC blobs \(blobsBefore) → \(blobsMid), expected 3 left (manifest, config, layer)") }
        try service.collectGarbage(keepDigests: [])
        let blobsAfter = try FileManager.default.contentsOfDirectory(atPath: "\(dataDir)/system/oci-cache/blobs/sha256").count
        guard blobsAfter == 0, try FileManager.default.contentsOfDirectory(atPath: "\(dataDir)/images").isEmpty else { fail("GC left things") }

        // The Docker v2s2, zstd and index flavours build too.
        for tag in ["test/busybox:v2s2", "test/busybox:zstd", "test/multi:latest"] {
            let (b, _) = try build("\(host)/\(tag)")
            guard sh("e2fsck -fn \(b.diskPath)").0 == 0 else { fail("\(tag) disk does not check") }
        }
        print("selftest: OK")
    } catch { fail("\(error)") }

default:
    fail("unknown mode \(mode)")
}
