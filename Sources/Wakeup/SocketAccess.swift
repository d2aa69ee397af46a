#if canImport(Glibc)
import Glibc
#endif

/// Who may connect to the sockets in the run directory (FastCGI, exec, wake-ups): root and the
/// members of one group (`HYPEMAN_SOCKET_GROUP`, default `hypeman`), which nginx's workers join.
///
/// - The group exists: sockets are `0660 root:<group>`, directories `0750 root:<group>`.
/// - `HYPEMAN_SOCKET_GROUP` is unset and the default group `hypeman` does not exist: the
///   process starts anyway with root-only sockets (`0600`) and directories (`0700`) and says so
///   in `warning` — nginx workers running as another user then get 502 until the group is
///   created (`groupadd --system hypeman`, or the sysusers.d file) and the daemons restarted.
///   Failing safe beats failing open; refusing to start would take the API down over a
///   missing group on a host where nginx runs as root.
/// - `HYPEMAN_SOCKET_GROUP` names a group that does not exist: a configuration error
///   (`fromEnvironment` throws): an operator who asked for a group expects that group.
///
/// Sockets are created with the process umask (0077 under systemd, 022 elsewhere: never
/// writable, so never connectable, by others) before `apply` loosens them for the group.
public struct SocketAccess: Sendable, Equatable {
    /// The group allowed to connect, nil when only root may.
    public let group: gid_t?
    /// The group's name as configured (for log lines).
    public let groupName: String
    /// Why the sockets are root-only, when they are (to be logged once at start).
    public let warning: String?

    public init(group: gid_t?, groupName: String, warning: String? = nil) {
        self.group = group
        self.groupName = groupName
        self.warning = warning
    }

    /// The mode of a socket: `0660` with a group, else `0600`.
    public var socketMode: mode_t { group == nil ? 0o600 : 0o660 }
    /// The mode of a directory holding sockets: `0750` with a group, else `0700`.
    public var directoryMode: mode_t { group == nil ? 0o700 : 0o750 }

    public struct ConfigError: Error, CustomStringConvertible {
        public let description: String
    }

    /// The default group name.
    public static let defaultGroup = "hypeman"

    /// Resolves `HYPEMAN_SOCKET_GROUP` (a group name or a numeric gid; default `hypeman`).
    public static func fromEnvironment() throws(ConfigError) -> SocketAccess {
        let configured = getenv("HYPEMAN_SOCKET_GROUP").map { String(cString: $0) } ?? ""
        let name = configured.isEmpty ? defaultGroup : configured
        if let gid = lookupGroup(name) { return SocketAccess(group: gid, groupName: name) }
        if !configured.isEmpty {
            throw ConfigError(description: "HYPEMAN_SOCKET_GROUP=\(configured): no such group; create it "
                              + "(groupadd --system \(configured)) or unset HYPEMAN_SOCKET_GROUP")
        }
        return SocketAccess(group: nil, groupName: name, warning:
            "group '\(name)' does not exist: sockets are root-only (0600), so nginx workers running as another user "
            + "cannot connect (502); create it with `groupadd --system \(name)` (or systemd-sysusers), add nginx's "
            + "worker user to it, and restart")
    }

    /// The setting of this process, resolved once (a failure: `HYPEMAN_SOCKET_GROUP` names no group).
    public static let current: Result<SocketAccess, ConfigError> = Result { () throws(ConfigError) in try fromEnvironment() }

    /// The gid of a group name or numeric gid, nil when there is no such group.
    public static func lookupGroup(_ name: String) -> gid_t? {
        if !name.isEmpty, name.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = UInt32(name) { return gid_t(n) }
        var group = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let rc = getgrnam_r(name, &group, &buffer, buffer.count, &result)
        guard rc == 0, let result else { return nil }
        return result.pointee.gr_gid
    }

    /// Gives `path` (a socket just bound) its group and mode. Returns an error text when the
    /// group could not be set, in which case the socket is left root-only (0600).
    @discardableResult
    public func apply(toSocket path: String) -> String? {
        apply(path, mode: socketMode, fallback: 0o600)
    }

    /// Creates `path` when missing, with its group and mode (`0750`/`0700`). An existing
    /// directory is left as it is (it may be systemd's RuntimeDirectory, or one an operator
    /// chose and shares); when other users may enter it, the answer says so, to be logged (the
    /// sockets' own modes still keep them out). Returns an error or warning text, or nil.
    @discardableResult
    public func prepareDirectory(_ path: String) -> String? {
        if mkdir(path, directoryMode) == 0 {
            return apply(path, mode: directoryMode, fallback: 0o700)
        }
        guard errno == EEXIST else { return "cannot create \(path): \(String(cString: strerror(errno)))" }
        var st = stat()
        guard stat(path, &st) == 0 else { return "cannot stat \(path): \(String(cString: strerror(errno)))" }
        if st.st_mode & 0o007 != 0 {
            return "\(path) is open to other users (mode \(String(st.st_mode & 0o7777, radix: 8))); make it 0750 root:\(groupName)"
        }
        return nil
    }

    private func apply(_ path: String, mode: mode_t, fallback: mode_t) -> String? {
        if let group, chown(path, uid_t.max, group) != 0 {
            let e = String(cString: strerror(errno))
            chmod(path, fallback)
            return "cannot give \(path) to group \(groupName): \(e); it stays root-only"
        }
        guard chmod(path, mode) == 0 else { return "cannot chmod \(path): \(String(cString: strerror(errno)))" }
        return nil
    }
}
