import Foundation
import Testing

/// Repository root, from this file's path (Tests/OCITests/Support.swift).
let repoRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// A fresh directory under /tmp, removed when the value goes away.
final class TempDir {
    let path: String
    init(_ tag: String = "oci") {
        path = NSTemporaryDirectory() + "/hm-\(tag)-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func sub(_ name: String) -> String { path + "/" + name }
}

struct RunResult { var status: Int32; var output: String }

/// Runs a program; stdout and stderr together.
@discardableResult
func run(_ exe: String, _ args: [String], stdin: String? = nil) throws -> RunResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    let inPipe = Pipe()
    if stdin != nil { p.standardInput = inPipe } else { p.standardInput = FileHandle.nullDevice }
    try p.run()
    if let stdin {
        inPipe.fileHandleForWriting.write(Data(stdin.utf8))
        try inPipe.fileHandleForWriting.close()
    }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return RunResult(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

func which(_ tool: String) -> String? {
    for d in ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"] {
        if FileManager.default.isExecutableFile(atPath: d + "/" + tool) { return d + "/" + tool }
    }
    return nil
}

/// One tar entry for `makeTar`.
struct TarEntry: Encodable {
    var path: String
    var type: String = "file"     // file dir symlink hardlink fifo chr
    var data: String = ""
    var target: String = ""
    var mode: Int = 0o644
    var uid: Int = 0
    var gid: Int = 0
    var major: Int = 0
    var minor: Int = 0

    static func file(_ p: String, _ data: String, mode: Int = 0o644, uid: Int = 0) -> TarEntry { TarEntry(path: p, data: data, mode: mode, uid: uid) }
    static func dir(_ p: String, mode: Int = 0o755) -> TarEntry { TarEntry(path: p, type: "dir", mode: mode) }
    static func symlink(_ p: String, to t: String) -> TarEntry { TarEntry(path: p, type: "symlink", target: t, mode: 0o777) }
    static func hardlink(_ p: String, to t: String) -> TarEntry { TarEntry(path: p, type: "hardlink", target: t) }
}

/// Writes a tar with Python's tarfile (no libarchive involved), then compresses it.
func makeTar(_ entries: [TarEntry], at path: String, compression: String = "gzip") throws {
    let json = String(decoding: try JSONEncoder().encode(entries), as: UTF8.self)
    let script = """
    import io, json, sys, tarfile
    entries = json.loads(sys.stdin.read())
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}
    with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            ti = tarfile.TarInfo(e["path"]); ti.type = types[e["type"]]; ti.mode = e["mode"]
            ti.uid = e["uid"]; ti.gid = e["gid"]; ti.mtime = 1600000000
            ti.devmajor = e["major"]; ti.devminor = e["minor"]
            if e["type"] in ("symlink", "hardlink"): ti.linkname = e["target"]
            data = e["data"].encode() if e["type"] == "file" else b""
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    """
    let tarPath = compression == "none" ? path : path + ".tar"
    let r = try run("/usr/bin/python3", ["-c", script, tarPath], stdin: json)
    guard r.status == 0 else { throw TestFailure("python tar failed: \(r.output)") }
    switch compression {
    case "gzip":
        let g = try run("/bin/sh", ["-c", "gzip -c '\(tarPath)' > '\(path)' && rm '\(tarPath)'"])
        guard g.status == 0 else { throw TestFailure("gzip failed: \(g.output)") }
    case "zstd":
        let z = try run("/bin/sh", ["-c", "zstd -q -c '\(tarPath)' > '\(path)' && rm '\(tarPath)'"])
        guard z.status == 0 else { throw TestFailure("zstd failed: \(z.output)") }
    default: break
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

func readText(_ path: String) -> String? {
    FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
}

func exists(_ path: String) -> Bool {
    var st = stat()
    return lstat(path, &st) == 0
}

/// tests/fixtures/fake-registry.py on a free loopback port, killed on deinit.
final class FakeRegistry {
    let process = Process()
    let host: String

    init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [repoRoot + "/tests/fixtures/fake-registry.py"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        var line = Data()
        while true {
            let b = out.fileHandleForReading.readData(ofLength: 1)
            if b.isEmpty || b == Data([10]) { break }
            line.append(b)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self)) else {
            process.terminate()
            throw TestFailure("fake registry did not print its port")
        }
        host = "127.0.0.1:\(port)"
    }

    deinit {
        // SIGKILL: a child spawned from a dispatch thread inherits its blocked SIGTERM.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Request counts per path.
    func stats() throws -> [String: Int] {
        let r = try run("/usr/bin/curl", ["-s", "http://\(host)/stats"])
        return (try JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Int]) ?? [:]
    }
}

let pythonAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
let isRoot = geteuid() == 0
