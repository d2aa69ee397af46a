import FastCGI
import JSON
import Model
import Store
#if canImport(Glibc)
import Glibc
#endif

/// `/volumes` (JSON, multipart archive, and `/volumes/from-archive` with a gzip body) and `/volumes/{id}`.
enum VolumeRoutes {
    static func register(_ r: inout Router) {
        r.add("GET", "/volumes") { h, _, ex, _ in
            h.send(ex, status: 200, .array(try h.store.listVolumes().map(Render.volume)))
        }
        r.add("POST", "/volumes") { h, req, ex, _ in
            if MultipartReader.boundary(fromContentType: req.contentType) != nil {
                try createFromMultipart(h, req, ex)
            } else if req.contentType.lowercased().hasPrefix("multipart/") {
                throw APIError(.invalidForm, "multipart body without a boundary parameter")
            } else {
                try createEmpty(h, req, ex)
            }
        }
        r.add("POST", "/volumes/from-archive") { h, req, ex, _ in try createFromRawArchive(h, req, ex) }
        r.add("GET", "/volumes/{id}") { h, _, ex, p in
            h.send(ex, status: 200, Render.volume(try h.store.resolveVolume(p["id"] ?? "").get()))
        }
        r.add("DELETE", "/volumes/{id}") { h, _, ex, p in
            let vol = try h.store.resolveVolume(p["id"] ?? "").get()
            try h.store.beginVolumeDelete(id: vol.id)
            guard let job = try h.runJob(.volumeDelete, target: vol.id) else { return h.sendNoContent(ex, status: 202) }
            try h.check(job)
            h.sendNoContent(ex)
        }
    }

    /// Custom volume ids name a directory: keep them to a safe alphabet.
    static func validID(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard !b.isEmpty, b.count <= 64 else { return false }
        func an(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }
        return an(b[0]) && b.allSatisfy { an($0) || $0 == 45 || $0 == 95 || $0 == 46 }
    }

    /// The largest volume: a volume is one file, and 16 TiB is the largest file ext4 holds (4 KiB
    /// blocks); beyond it the disk could not be sized and the create would fail on the host.
    static let maxSizeGB: Int64 = 16384

    static func checkFields(name: String, sizeGB: Int64, id: String?) throws {
        if name.isEmpty || name.utf8.count > 255 { throw APIError(.invalidField, "name must be 1 to 255 characters") }
        if sizeGB < 1 || sizeGB > maxSizeGB {
            throw APIError(.invalidField, "size_gb must be a positive integer (1 to \(maxSizeGB))")
        }
        if let id, !validID(id) {
            throw APIError(.invalidField, "id must be 1-64 characters of letters, digits, '-', '_' or '.', starting with a letter or digit")
        }
    }

    static func createEmpty(_ h: APIHandler, _ req: Request, _ ex: any Exchange) throws {
        guard req.contentLength > 0 else { throw APIError(.invalidRequest, "request body is required") }
        let body = try RequestBody.read(req, ex)
        try body.allowOnly(["name", "size_gb", "id"])
        let name = try body.requireString("name")
        guard let sizeGB = try body.int("size_gb") else { throw body.fail("size_gb", "property \"size_gb\" is missing") }
        let id = try body.string("id")
        try checkFields(name: name, sizeGB: sizeGB, id: id)
        try finish(h, ex, id: id ?? CUID2.make(), name: name, sizeGB: Int(sizeGB), archive: nil)
    }

    /// Reserves the row, runs the job, answers 201 (or the job's error; the row is gone then).
    static func finish(_ h: APIHandler, _ ex: any Exchange, id: String, name: String, sizeGB: Int, archive: String?) throws {
        do {
            try h.store.insertVolume(id: id, name: name, sizeGB: sizeGB, maxTotalGB: h.config.maxTotalVolumeGB)
        } catch {
            if let archive { unlink(archive) }
            throw error
        }
        var payload: JSONObject = ["name": .string(name), "size_gb": .int(Int64(sizeGB))]
        if let archive { payload["archive"] = .string(archive) }
        guard let job = try h.runJob(.volumeCreate, target: id, payload: .object(payload)) else {
            throw APIError(.timeout, "volume \(id) is still being created; GET /volumes/\(id) shows it once ready")
        }
        try h.check(job)
        guard let vol = try h.store.volume(id: id) else { throw APIError(.internalError, "volume vanished after create") }
        h.send(ex, status: 201, Render.volume(vol))
    }

    static func createFromMultipart(_ h: APIHandler, _ req: Request, _ ex: any Exchange) throws {
        guard let boundary = MultipartReader.boundary(fromContentType: req.contentType) else {
            throw APIError(.invalidForm, "multipart body without a boundary parameter")
        }
        var fields: [String: String] = [:]
        var sink: UploadFile? = nil
        var sawContent = false
        do {
            try MultipartReader(boundary: Array(boundary.utf8)).read(from: ex, field: { k, v in fields[k] = v }, file: { part, chunk in
                guard part.name == "content" else { return }
                if sink == nil {
                    if sawContent { throw APIError(.invalidForm, "more than one content part") }
                    sink = try UploadFile(dir: h.config.uploadDir)
                }
                sawContent = true
                if let chunk { try sink!.write(chunk) }
            })
        } catch let e as MultipartReader.Failure {
            sink?.discard()
            if case .malformed(let why) = e { throw APIError(.invalidForm, "invalid multipart form: \(why)") }
        } catch {
            sink?.discard()
            throw error
        }
        guard let file = sink else { throw APIError(.missingFile, "content file is required for multipart requests") }
        do {
            if let extra = fields.keys.first(where: { !["name", "size_gb", "id"].contains($0) }) {
                throw APIError(.invalidForm, "invalid multipart form: field \"\(extra)\" is unsupported (name, size_gb, id, content)")
            }
            guard let name = fields["name"] else { throw APIError(.missingField, "name is required") }
            guard let sizeText = fields["size_gb"] else { throw APIError(.missingField, "size_gb is required") }
            guard let sizeGB = Int64(sizeText.trimmingSpaces()) else { throw APIError(.invalidField, "size_gb must be a positive integer") }
            let id = fields["id"].flatMap { $0.isEmpty ? nil : $0 }
            try checkFields(name: name, sizeGB: sizeGB, id: id)
            try file.close()
            try finish(h, ex, id: id ?? CUID2.make(), name: name, sizeGB: Int(sizeGB), archive: file.path)
        } catch {
            file.discard()
            throw error
        }
    }

    /// `POST /volumes/from-archive?name=&size_gb=&id=` with the tar.gz as the body.
    static func createFromRawArchive(_ h: APIHandler, _ req: Request, _ ex: any Exchange) throws {
        let q = parseQuery(req.query)
        guard let name = q["name"] else { throw APIError(.missingField, "name is required") }
        guard let sizeText = q["size_gb"] else { throw APIError(.missingField, "size_gb is required") }
        guard let sizeGB = Int64(sizeText) else { throw APIError(.invalidField, "size_gb must be a positive integer") }
        let id = q["id"].flatMap { $0.isEmpty ? nil : $0 }
        try checkFields(name: name, sizeGB: sizeGB, id: id)
        guard req.contentLength > 0 else { throw APIError(.missingFile, "an archive body (tar.gz) is required") }
        let file = try UploadFile(dir: h.config.uploadDir)
        do {
            while true {
                let chunk = ex.readBody(max: 256 * 1024)
                if chunk.isEmpty { break }
                try file.write(chunk)
            }
            try file.close()
            try finish(h, ex, id: id ?? CUID2.make(), name: name, sizeGB: Int(sizeGB), archive: file.path)
        } catch {
            file.discard()
            throw error
        }
    }
}

/// An uploaded archive staged for the Provisioner (which deletes it once consumed).
final class UploadFile {
    let path: String
    private var fd: Int32

    init(dir: String) throws {
        mkdir(dir, 0o700)
        path = "\(dir)/\(CUID2.make()).upload"
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw APIError(.internalError, "cannot stage upload in \(dir): \(String(cString: strerror(errno)))") }
    }

    func write(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw APIError(.internalError, "writing upload: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    func close() throws {
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
    }

    func discard() {
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
        unlink(path)
    }
}
