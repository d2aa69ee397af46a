import Model

extension RequestBody {
    /// Refuses members the schema does not declare (the request schemas say
    /// `additionalProperties: false`), so a typo or an unknown option is a 400, never silently
    /// ignored, and nothing the server does not read (such as an integer beyond Int64) can reach it.
    func allowOnly(_ keys: Set<String>) throws {
        for k in object.keys where !keys.contains(k) {
            throw fail(k, "property \"\(k)\" is unsupported")
        }
    }
}
