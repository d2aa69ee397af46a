/// The typed payloads of `FrameKind`s. Each has `encode() -> [UInt8]` and `init(decoding:)`.

/// Protocol version both sides speak; a hello with another version is refused by the host.
public let agentProtocolVersion: UInt32 = 1

public struct HelloRequest: Sendable, Equatable {
    public var version: UInt32
    public init(version: UInt32 = agentProtocolVersion) { self.version = version }
    public func encode() -> [UInt8] { var w = WireWriter(); w.u32(version); return w.bytes }
    public init(decoding p: [UInt8]) throws(WireError) { var r = WireReader(p); version = try r.u32() }
}

public struct HelloReply: Sendable, Equatable {
    public var version: UInt32
    /// e.g. `hypeman-agent 1`.
    public var agent: String
    /// The guest kernel release (`uname -r`).
    public var kernel: String
    public init(version: UInt32 = agentProtocolVersion, agent: String, kernel: String) {
        self.version = version; self.agent = agent; self.kernel = kernel
    }
    public func encode() -> [UInt8] { var w = WireWriter(); w.u32(version); w.string(agent); w.string(kernel); return w.bytes }
    public init(decoding p: [UInt8]) throws(WireError) {
        var r = WireReader(p); version = try r.u32(); agent = try r.string(); kernel = try r.string()
    }
}

/// Starts a command in the guest's app root (chroot), in its own session / process group.
public struct ExecStart: Sendable, Equatable {
    /// argv; argv[0] is looked up in PATH (of `env`, else the app's) inside the root.
    public var command: [String]
    /// Extra `KEY=VALUE` entries laid over the app's environment.
    public var env: [String]
    /// Working directory inside the root; empty = the image's working directory.
    public var cwd: String
    public var tty: Bool
    public var rows: UInt32
    public var cols: UInt32
    /// Seconds until the process group is killed and the exit code is 124; 0 = no limit.
    public var timeoutSeconds: UInt32

    public init(command: [String], env: [String] = [], cwd: String = "", tty: Bool = false,
                rows: UInt32 = 0, cols: UInt32 = 0, timeoutSeconds: UInt32 = 0) {
        self.command = command; self.env = env; self.cwd = cwd; self.tty = tty
        self.rows = rows; self.cols = cols; self.timeoutSeconds = timeoutSeconds
    }
    public func encode() -> [UInt8] {
        var w = WireWriter()
        w.strings(command); w.strings(env); w.string(cwd); w.bool(tty); w.u32(rows); w.u32(cols); w.u32(timeoutSeconds)
        return w.bytes
    }
    public init(decoding p: [UInt8]) throws(WireError) {
        var r = WireReader(p)
        command = try r.strings(); env = try r.strings(); cwd = try r.string(); tty = try r.bool()
        rows = try r.u32(); cols = try r.u32(); timeoutSeconds = try r.u32()
    }
}

public struct Resize: Sendable, Equatable {
    public var rows: UInt32
    public var cols: UInt32
    public init(rows: UInt32, cols: UInt32) { self.rows = rows; self.cols = cols }
    public func encode() -> [UInt8] { var w = WireWriter(); w.u32(rows); w.u32(cols); return w.bytes }
    public init(decoding p: [UInt8]) throws(WireError) { var r = WireReader(p); rows = try r.u32(); cols = try r.u32() }
}

public struct SignalRequest: Sendable, Equatable {
    public var signal: Int32
    public init(signal: Int32) { self.signal = signal }
    public func encode() -> [UInt8] { var w = WireWriter(); w.i32(signal); return w.bytes }
    public init(decoding p: [UInt8]) throws(WireError) { var r = WireReader(p); signal = try r.i32() }
}

/// Bytes the session's process wrote (fd 1 = stdout, 2 = stderr; a tty session sends fd 1 only).
public struct Output: Sendable, Equatable {
    public var fd: UInt8
    public var bytes: [UInt8]
    public init(fd: UInt8, bytes: [UInt8]) { self.fd = fd; self.bytes = bytes }
    public func encode() -> [UInt8] { [fd] + bytes }
    public init(decoding p: [UInt8]) throws(WireError) {
        guard let first = p.first else { throw WireError("empty output frame") }
        fd = first; bytes = Array(p.dropFirst())
    }
}

/// How a session ended. `error` is set when the command could not be started at all
/// (then `code` is 127 for a missing executable, 126 otherwise); a timeout gives 124; a
/// signal N gives 128+N.
public struct ExitStatus: Sendable, Equatable {
    public var code: Int32
    public var error: String
    public init(code: Int32, error: String = "") { self.code = code; self.error = error }
    public func encode() -> [UInt8] { var w = WireWriter(); w.i32(code); w.string(error); return w.bytes }
    public init(decoding p: [UInt8]) throws(WireError) { var r = WireReader(p); code = try r.i32(); error = try r.string() }
}

public enum MountMode: UInt8, Sendable, Equatable {
    case readWrite = 0, readOnly = 1, overlay = 2
}

/// Mounts the virtio-blk disk whose serial is `serial` at `mountPath` inside the app root.
/// `overlay`: `serial` is mounted read-only as the lower layer and `overlaySerial` (an ext4
/// disk) holds the private upper layer.
public struct MountRequest: Sendable, Equatable {
    public var serial: String
    public var overlaySerial: String
    public var mountPath: String
    public var mode: MountMode
    public init(serial: String, overlaySerial: String = "", mountPath: String, mode: MountMode) {
        self.serial = serial; self.overlaySerial = overlaySerial; self.mountPath = mountPath; self.mode = mode
    }
    public func encode() -> [UInt8] {
        var w = WireWriter(); w.string(serial); w.string(overlaySerial); w.string(mountPath); w.u8(mode.rawValue); return w.bytes
    }
    public init(decoding p: [UInt8]) throws(WireError) {
        var r = WireReader(p)
        serial = try r.string(); overlaySerial = try r.string(); mountPath = try r.string()
        guard let m = MountMode(rawValue: try r.u8()) else { throw WireError("unknown mount mode") }
        mode = m
    }
}

/// Unmounts what a `MountRequest` mounted at `mountPath` (and the overlay's layers).
public struct UnmountRequest: Sendable, Equatable {
    public var mountPath: String
    public init(mountPath: String) { self.mountPath = mountPath }
    public func encode() -> [UInt8] { var w = WireWriter(); w.string(mountPath); return w.bytes }
    public init(decoding p: [UInt8]) throws(WireError) { var r = WireReader(p); mountPath = try r.string() }
}

/// The answer to a mount/unmount. `busy`: the unmount failed with EBUSY (files in use) and
/// nothing was changed.
public struct RequestResult: Sendable, Equatable {
    public var ok: Bool
    public var busy: Bool
    public var message: String
    public init(ok: Bool, busy: Bool = false, message: String = "") { self.ok = ok; self.busy = busy; self.message = message }
    public func encode() -> [UInt8] { var w = WireWriter(); w.bool(ok); w.bool(busy); w.string(message); return w.bytes }
    public init(decoding p: [UInt8]) throws(WireError) {
        var r = WireReader(p); ok = try r.bool(); busy = try r.bool(); message = try r.string()
    }
}
