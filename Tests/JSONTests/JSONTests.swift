import Testing
@testable import JSON

@Suite struct JSONTests {
    @Test func roundTripsKeepingKeyOrder() throws {
        let v: JSONValue = ["b": 1, "a": [true, nil, "x"], "c": ["n": 2.5]]
        let s = JSON.serializeString(v)
        #expect(s == #"{"b":1,"a":[true,null,"x"],"c":{"n":2.5}}"#)
        #expect(try JSON.parse(s) == v)
    }

    @Test func escapesStrings() throws {
        let tricky = "quote\" backslash\\ newline\n tab\t nul\u{0} emoji😀 </script>"
        let s = JSON.serializeString(.string(tricky))
        #expect(!s.contains("\n"))
        #expect(try JSON.parse(s) == .string(tricky))
    }

    @Test func rejectsBadDocumentsWithPosition() {
        for bad in ["{bad", "{\"a\":1,\"a\":2}", "[1,]", "", "{\"a\": 99999999999999999999999}"] {
            #expect(throws: JSONParseError.self) { try JSON.parse(bad) }
        }
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONParseError.self) { try JSON.parse(deep) }
    }

    @Test func typedAccessors() throws {
        let v = try JSON.parse(#"{"i":3,"d":4.0,"s":"x","o":{"k":"v"}}"#)
        #expect(v["i"]?.intValue == 3)
        #expect(v["d"]?.intValue == 4)
        #expect(v["s"]?.stringValue == "x")
        #expect(v["o"]?["k"]?.stringValue == "v")
        #expect(v["missing"] == nil)
    }
}

/// `JSONWriter` (behind `JSON.serialize`) against jansson's own dump, byte for byte.
@Suite struct JSONWriterTests {
    static func expectSameAsJansson(_ v: JSONValue, sourceLocation: SourceLocation = #_sourceLocation) {
        let ours = String(decoding: JSON.serialize(v), as: UTF8.self)
        let theirs = String(decoding: JSON.serializeWithJansson(v), as: UTF8.self)
        #expect(ours == theirs, sourceLocation: sourceLocation)
    }

    @Test func everyASCIICharacterEscapesLikeJansson() {
        for c in 0..<128 {
            let ch = String(UnicodeScalar(UInt8(c)))
            Self.expectSameAsJansson(.string("a\(ch)b"))
            Self.expectSameAsJansson(.string(ch))
            Self.expectSameAsJansson(["k\(ch)": .string(ch)])
        }
        #expect(JSON.serializeString(.string("\u{1}\u{1F}\"\\/\u{7F}")) == #""\u0001\u001F\"\\/\#u{7F}""#)
    }

    @Test func unicodeAndLongStringsLikeJansson() {
        var rng = SystemRandomNumberGenerator()
        let pool: [Character] = ["a", "Z", "é", "😀", "\u{0}", "\n", "\"", "\\", "€", "中", "\u{2028}", "\r\n", " ", "\u{1F}"]
        for n in [0, 1, 7, 15, 16, 17, 100, 5000] {
            for _ in 0..<20 {
                let s = String((0..<n).map { _ in pool[Int.random(in: 0..<pool.count, using: &rng)] })
                Self.expectSameAsJansson(.string(s))
                Self.expectSameAsJansson(.object(JSONObject([(s, .array([.string(s), .null]))])))
            }
        }
    }

    @Test func numbersAndStructuresLikeJansson() {
        for i: Int64 in [0, 1, 9, 10, -1, -9, -10, 99, 1234567890, .max, .min, .max - 1, .min + 1] {
            Self.expectSameAsJansson(.int(i))
        }
        for d in [0.0, -0.0, 1.0, 2.5, 1e300, -1e-300, 0.1, 1.0 / 3.0, 123456789012345678.0, .infinity, .nan, 5e-324] {
            Self.expectSameAsJansson(.double(d))
            Self.expectSameAsJansson(["d": .double(d), "e": [.double(d)]])
        }
        let doc: JSONValue = ["a": [], "b": [:], "c": [[], [:], [[1]], ["x": ["y": [true, false, nil]]]], "": "", "z": 1.5]
        Self.expectSameAsJansson(doc)
        Self.expectSameAsJansson([])
        Self.expectSameAsJansson([:])
        Self.expectSameAsJansson(nil)
        Self.expectSameAsJansson(true)
    }

    @Test func writerMembersAndCommas() {
        var w = JSONWriter()
        w.beginObject()
        w.key("a"); w.int(1)
        w.key("b"); w.beginArray(); w.string("x"); w.beginObject(); w.endObject(); w.int(nil); w.endArray()
        w.key(escaping: "c\"d"); w.string(nil as String?)
        var t = "te\u{1}xt"
        t.withUTF8 { w.key("e"); w.string(utf8: UnsafeRawBufferPointer($0)) }
        w.endObject()
        #expect(String(decoding: w.bytes, as: UTF8.self) == #"{"a":1,"b":["x",{},null],"c\"d":null,"e":"te\u0001xt"}"#)
    }
}

@Suite struct StringMapTests {
    /// The reference: jansson's parse, then the string members.
    static func reference(_ s: String) -> [String: String]? {
        guard case .object(let o)? = try? JSON.parse(s) else { return nil }
        var m: [String: String] = [:]
        for (k, v) in o { if let sv = v.stringValue { m[k] = sv } }
        return m
    }

    @Test func fastPathAndFallbackAgreeWithJansson() {
        let docs = [
            #"{"PORT":"8080"}"#, "{}", " { } ", #"{ "A" : "1" , "B":"" }"#, "\n{\"A\":\"1\"}\t",
            #"{"A":"1","A":"2"}"#, #"{"A":"1",}"#, #"{"A":1,"B":"x"}"#, #"{"A":"\n"}"#, #"{"A":"\u00e9"}"#, #"{"é":"ü"}"#,
            #"{"A":"x\"y"}"#, #"{"A":null}"#, #"{"A":{"B":"c"}}"#, "[]", "\"s\"", "", "{", #"{"A""#, #"{"A":"1"} x"#,
            "{\"A\":\"a\u{1}\"}", "{\"A\":\"\u{7F}\"}", #"{"A":"1" "B":"2"}"#, #"{"A":"1"}}"#, "nul", "{\"k\":\"v\"}\u{0}",
        ]
        for d in docs {
            #expect(JSON.parseStringMap(d) == Self.reference(d), "\(d.debugDescription)")
        }
        #expect(JSON.parseStringMap(#"{"PORT":"8080","A":"b"}"#) == ["PORT": "8080", "A": "b"])
        #expect(PlainStringMap.read(UnsafeRawBufferPointer(start: nil, count: 0)) == nil)
    }
}
