import Testing
import Foundation
@testable import API
import FastCGI

/// The multipart reader's bounds (preamble, part headers, part count, one file part) and its
/// linear scan, on bodies delivered in small reads as a slow client would send them.
@Suite struct MultipartBoundsTests {
    static let boundary = "XbOuNdArY"

    struct Parsed {
        var fields: [String: String] = [:]
        var files: [String: [UInt8]] = [:]
        var work = MultipartReader.Work()
    }

    static func parse(_ body: [UInt8], chunk: Int = 256 * 1024) throws -> Parsed {
        var r = MultipartReader(boundary: Array(boundary.utf8))
        r.readChunk = chunk
        var p = Parsed()
        p.work = try r.read(from: FakeExchange(body), field: { k, v in p.fields[k] = v }, file: { part, bytes in
            if let bytes { p.files[part.name, default: []] += bytes }
        })
        return p
    }

    static func part(_ name: String, _ value: String, filename: String? = nil) -> String {
        var h = "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\""
        if let filename { h += "; filename=\"\(filename)\"" }
        return h + "\r\n\r\n" + value + "\r\n"
    }

    static func body(preamble: String = "", _ parts: [String]) -> [UInt8] {
        Array((preamble + parts.joined() + "--\(boundary)--\r\n").utf8)
    }

    static func refusal(_ body: [UInt8], chunk: Int = 256 * 1024) -> String? {
        do { _ = try parse(body, chunk: chunk); return nil } catch MultipartReader.Failure.malformed(let why) { return why } catch {
            return "unexpected \(error)"
        }
    }

    @Test func readsFieldsAndOneFileInTinyReads() throws {
        let payload = String(repeating: "0123456789abcdef", count: 4096)   // 64 KiB
        let b = Self.body(preamble: "ignored preamble\r\n",
                          [Self.part("name", "vol"), Self.part("size_gb", "1"), Self.part("content", payload, filename: "a.tgz")])
        let p = try Self.parse(b, chunk: 97)
        #expect(p.fields == ["name": "vol", "size_gb": "1"])
        #expect(p.files["content"] == Array(payload.utf8))
        // Every byte is looked at a bounded number of times, whatever the read size.
        #expect(p.work.bytesScanned <= 2 * b.count)
    }

    @Test func hugePreambleIsRefusedEarly() {
        var b = [UInt8](repeating: UInt8(ascii: "p"), count: 1 << 20)
        b += Self.body([Self.part("name", "v")])
        var r = MultipartReader(boundary: Array(Self.boundary.utf8))
        r.readChunk = 4096
        do {
            _ = try r.read(from: FakeExchange(b), field: { _, _ in }, file: { _, _ in })
            Issue.record("a 1 MiB preamble was accepted")
        } catch MultipartReader.Failure.malformed(let why) {
            #expect(why.contains("preamble"))
        } catch { Issue.record("unexpected \(error)") }
        // A preamble just under the cap, read 100 bytes at a time, is scanned linearly.
        let ok = Array(String(repeating: "q", count: 60 * 1024).utf8) + Self.body([Self.part("name", "v")])
        let p = try? Self.parse(ok, chunk: 100)
        #expect(p?.fields["name"] == "v")
        #expect((p?.work.bytesScanned ?? .max) <= 2 * ok.count)
        #expect((p?.work.bytesRead ?? 0) == ok.count)
    }

    @Test func tooManyFieldsAreRefused() {
        let parts = (0..<1000).map { Self.part("f\($0)", "x") }
        #expect(Self.refusal(Self.body(parts))?.contains("more than 64 parts") == true)
        #expect(Self.refusal(Self.body(Array(parts.prefix(64)))) == nil)
    }

    @Test func secondFilePartIsRefused() {
        let two = Self.body([Self.part("name", "v"), Self.part("content", "AAAA", filename: "a"), Self.part("content", "BBBB", filename: "b")])
        #expect(Self.refusal(two)?.contains("more than one file part") == true)
        let other = Self.body([Self.part("content", "AAAA"), Self.part("extra", "BBBB", filename: "b.tgz")])
        #expect(Self.refusal(other)?.contains("more than one file part") == true)
    }

    @Test func oversizedPartHeadersAreRefused() {
        let big = "--\(Self.boundary)\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Pad: "
            + String(repeating: "h", count: 9000) + "\r\n\r\nv\r\n--\(Self.boundary)--\r\n"
        #expect(Self.refusal(Array(big.utf8), chunk: 1000)?.contains("part headers larger") == true)
        let endless = "--\(Self.boundary)\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Pad: " + String(repeating: "h", count: 1 << 20)
        #expect(Self.refusal(Array(endless.utf8), chunk: 4096)?.contains("part headers larger") == true)
    }
}
