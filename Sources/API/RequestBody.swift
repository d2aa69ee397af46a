import FastCGI
import JSON
import Model

/// Typed access to a JSON request body. Every failure is a 400 `Bad Request` naming the field,
/// in the validator's words (`request body has an error: …`).
struct RequestBody {
    let object: JSONObject
    let prefix: String

    static let maxJSONBytes = 1 << 20

    /// Reads and parses the body as a JSON object.
    static func read(_ request: Request, _ ex: any Exchange) throws -> RequestBody {
        guard let bytes = ex.readAll(limit: maxJSONBytes) else {
            throw APIError(.payloadTooLarge, "request body is larger than \(maxJSONBytes) bytes")
        }
        if bytes.isEmpty { throw APIError(.badRequest, "request body has an error: value is required but missing") }
        let value: JSONValue
        do { value = try JSON.parse(bytes) } catch {
            throw APIError(.badRequest, "request body has an error: failed to decode request body: \(error)")
        }
        guard case .object(let o) = value else {
            throw APIError(.badRequest, "request body has an error: doesn't match schema: value must be an object")
        }
        return RequestBody(object: o, prefix: "")
    }

    func fail(_ key: String, _ why: String) -> APIError {
        APIError(.badRequest, "request body has an error: doesn't match schema: Error at \"\(prefix)/\(key)\": \(why)")
    }

    func value(_ key: String) -> JSONValue? {
        guard let v = object[key], !v.isNull else { return nil }
        return v
    }

    func string(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v.stringValue else { throw fail(key, "value must be a string") }
        return s
    }

    func requireString(_ key: String) throws -> String {
        guard let s = try string(key) else { throw fail(key, "property \"\(key)\" is missing") }
        return s
    }

    func int(_ key: String) throws -> Int64? {
        guard let v = value(key) else { return nil }
        guard let i = v.intValue else { throw fail(key, "value must be an integer") }
        return i
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        guard let b = v.boolValue else { throw fail(key, "value must be a boolean") }
        return b
    }

    func stringMap(_ key: String) throws -> [String: String]? {
        guard let v = value(key) else { return nil }
        guard let o = v.objectValue else { throw fail(key, "value must be an object") }
        var m: [String: String] = [:]
        for (k, e) in o {
            guard let s = e.stringValue else { throw fail("\(key)/\(k)", "value must be a string") }
            m[k] = s
        }
        return m
    }

    func nested(_ key: String) throws -> RequestBody? {
        guard let v = value(key) else { return nil }
        guard let o = v.objectValue else { throw fail(key, "value must be an object") }
        return RequestBody(object: o, prefix: prefix + "/" + key)
    }

    func array(_ key: String) throws -> [RequestBody]? {
        guard let v = value(key) else { return nil }
        guard let a = v.arrayValue else { throw fail(key, "value must be an array") }
        return try a.enumerated().map { i, e in
            guard let o = e.objectValue else { throw fail("\(key)/\(i)", "value must be an object") }
            return RequestBody(object: o, prefix: "\(prefix)/\(key)/\(i)")
        }
    }

    func stringArray(_ key: String) throws -> [String]? {
        guard let v = value(key) else { return nil }
        guard let a = v.arrayValue else { throw fail(key, "value must be an array") }
        return try a.enumerated().map { i, e in
            guard let s = e.stringValue else { throw fail("\(key)/\(i)", "value must be a string") }
            return s
        }
    }
}
