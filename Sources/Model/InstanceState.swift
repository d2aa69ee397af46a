/// Instance states as the API shows them (contract §2.1), and the operation gate (§2.2).
public enum InstanceState: String, Sendable, CaseIterable {
    case created = "Created"
    case initializing = "Initializing"
    case running = "Running"
    case paused = "Paused"
    case shutdown = "Shutdown"
    case stopped = "Stopped"
    case standby = "Standby"
    case unknown = "Unknown"
}

/// Operations that change an instance.
public enum InstanceOperation: String, Sendable {
    case standby, restore, stop, start, delete

    /// The state the operation requires, or nil when any state is allowed (delete).
    public var requiredState: InstanceState? {
        switch self {
        case .standby, .stop: return .running
        case .restore: return .standby
        case .start: return .stopped
        case .delete: return nil
        }
    }

    /// The contract's 409 for a wrong state, or nil when `state` allows the operation. `stop`
    /// also works on an `Initializing` instance (VM up, guest agent not answering yet).
    public func gate(_ state: InstanceState) -> APIError? {
        guard let need = requiredState, need != state else { return nil }
        if self == .stop && state == .initializing { return nil }
        let suffix: String
        switch self {
        case .stop, .start: suffix = ", must be \(need.rawValue)"
        default: suffix = ""
        }
        return APIError(.invalidState, "invalid state transition: cannot \(rawValue) from state \(state.rawValue)\(suffix)")
    }
}
