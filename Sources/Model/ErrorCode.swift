/// The contract's error `code` strings and the HTTP status each one is answered with.
/// One table: the API renders `{code, message}` from it; the provisioner records codes in jobs.
public enum ErrorCode: String, Sendable, CaseIterable {
    case badRequest = "Bad Request"
    case unauthorized = "Unauthorized"
    case notFound = "not_found"
    case ambiguous = "ambiguous"
    case invalidName = "invalid_name"
    case invalidSize = "invalid_size"
    case invalidHotplugSize = "invalid_hotplug_size"
    case invalidOverlaySize = "invalid_overlay_size"
    case imageNotReady = "image_not_ready"
    case alreadyExists = "already_exists"
    case nameConflict = "name_conflict"
    case invalidState = "invalid_state"
    case logNotFound = "log_not_found"
    case dependencyMissing = "dependency_missing"
    case notImplemented = "not_implemented"
    case invalidRequest = "invalid_request"
    case invalidForm = "invalid_form"
    case invalidField = "invalid_field"
    case missingField = "missing_field"
    case missingFile = "missing_file"
    case archiveTooLarge = "archive_too_large"
    case conflict = "conflict"
    case badRequestDomain = "bad_request"
    case instanceNotFound = "instance_not_found"
    case domainNotAllowed = "domain_not_allowed"
    case configValidationFailed = "config_validation_failed"
    case hostnameInUse = "hostname_in_use"
    case portInUse = "port_in_use"
    case limitExceeded = "limit_exceeded"
    case volumeInUse = "volume_in_use"
    case methodNotAllowed = "method_not_allowed"
    case payloadTooLarge = "payload_too_large"
    case timeout = "timeout"
    case unavailable = "unavailable"
    case internalError = "internal_error"

    /// HTTP status for this code. `already_exists` is 409 except on instance create (400), which
    /// passes the status explicitly.
    public var httpStatus: Int {
        switch self {
        case .badRequest, .invalidName, .invalidSize, .invalidHotplugSize, .invalidOverlaySize,
             .invalidRequest, .invalidForm, .invalidField, .missingField,
             .missingFile, .archiveTooLarge, .badRequestDomain, .instanceNotFound, .domainNotAllowed,
             .configValidationFailed, .limitExceeded:
            return 400
        case .unauthorized: return 401
        case .notFound, .logNotFound: return 404
        case .methodNotAllowed: return 405
        // A valid request the current state refuses (a name taken, an image still building): 409.
        case .ambiguous, .alreadyExists, .invalidState, .conflict, .hostnameInUse, .portInUse, .volumeInUse,
             .imageNotReady, .nameConflict:
            return 409
        case .payloadTooLarge: return 413
        case .notImplemented: return 501
        case .unavailable: return 503
        case .timeout: return 504
        case .dependencyMissing, .internalError: return 500
        }
    }
}

/// An error a user can act on: a contract code, a safe message and (optionally) a status override.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public let code: ErrorCode
    public let message: String
    public let status: Int

    public init(_ code: ErrorCode, _ message: String, status: Int? = nil) {
        self.code = code
        self.message = message
        self.status = status ?? code.httpStatus
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
