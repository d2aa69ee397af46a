import Testing
import Foundation
import Wakeup

/// Who may connect to the run directory's sockets: HYPEMAN_SOCKET_GROUP, 0660/0750, safe fallbacks.
@Suite(.serialized) struct SocketAccessTests {
    func mode(_ path: String) -> (mode: mode_t, gid: gid_t) {
        var st = stat()
        #expect(stat(path, &st) == 0)
        return (st.st_mode & 0o7777, st.st_gid)
    }

    // Resolve the process-wide setting before changing the environment (other suites' handlers
    // read SocketAccess.current concurrently).
    init() { _ = SocketAccess.current }

    @Test func aConfiguredGroupThatDoesNotExistIsAnError() {
        setenv("HYPEMAN_SOCKET_GROUP", "hm-no-such-group-\(getpid())", 1)
        defer { unsetenv("HYPEMAN_SOCKET_GROUP") }
        #expect(throws: SocketAccess.ConfigError.self) { try SocketAccess.fromEnvironment() }
    }

    @Test func aNumericGroupAndTheDefault() throws {
        setenv("HYPEMAN_SOCKET_GROUP", "0", 1)
        let root = try SocketAccess.fromEnvironment()
        #expect(root.group == 0 && root.socketMode == 0o660 && root.directoryMode == 0o750 && root.warning == nil)
        unsetenv("HYPEMAN_SOCKET_GROUP")
        let def = try SocketAccess.fromEnvironment()
        #expect(def.groupName == "hypeman")
        // Without the default group: root-only, with a warning naming the fix.
        if def.group == nil {
            #expect(def.socketMode == 0o600 && def.directoryMode == 0o700 && def.warning?.contains("groupadd") == true)
        }
        let none = SocketAccess(group: nil, groupName: "x")
        #expect(none.socketMode == 0o600 && none.directoryMode == 0o700)
    }

    @Test func directoriesAndSockets() throws {
        let base = "/tmp/hm-sa-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: base) }
        mkdir(base, 0o755)
        let access = SocketAccess(group: getegid(), groupName: "own")
        // Created: 0750 with the group.
        #expect(access.prepareDirectory(base + "/run") == nil)
        #expect(mode(base + "/run") == (0o750, getegid()))
        // Existing and open to others: left alone, with a warning.
        mkdir(base + "/open", 0o755)
        chmod(base + "/open", 0o755)
        #expect(access.prepareDirectory(base + "/open")?.contains("open to other users") == true)
        #expect(mode(base + "/open").mode == 0o755)
        // A socket: 0660 with the group; root-only without one.
        for (a, want) in [(access, mode_t(0o660)), (SocketAccess(group: nil, groupName: "x"), mode_t(0o600))] {
            let path = base + "/run/s-\(want).sock"
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in path.utf8.enumerated() { raw[i] = b }
            }
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            #expect(rc == 0)
            #expect(a.apply(toSocket: path) == nil)
            #expect(mode(path).mode == want)
        }
    }
}
