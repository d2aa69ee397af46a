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
