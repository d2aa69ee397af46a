import FastCGI
import Model
import Store
import Wakeup
#if canImport(Glibc)
import Glibc
#endif

/// Wiring of the `hypeman-fcgi` executable: config from the environment, schema migration, one
/// handler per worker thread, run until SIGTERM.
public enum FCGIMain {
    public static func run() {
        let log: @Sendable (String) -> Void = { msg in
            let line = "\(Timestamp.now()) hypeman-fcgi[\(getpid())] \(msg)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
        }
        let config: APIConfig
        do { config = try APIConfig.fromEnvironment() } catch {
            log("configuration error: \(error)")
            exit(2)
        }
        let socket = getenv("HYPEMAN_FCGI_SOCKET").map { String(cString: $0) } ?? config.runDir + "/fcgi-0.sock"
        // Sockets 0660 root:HYPEMAN_SOCKET_GROUP in directories 0750 (SocketAccess).
        let access: SocketAccess
        switch SocketAccess.current {
        case .success(let a): access = a
        case .failure(let e):
            log("configuration error: \(e)")
            exit(2)
        }
        if let warning = access.warning { log("warning: \(warning)") }
        for dir in [config.runDir, config.runDir + "/w"] {
            if let problem = access.prepareDirectory(dir) { log("warning: \(problem)") }
        }
        do {
            _ = try Store(path: config.dbPath)   // migrate once before threads start
        } catch {
            log("cannot open database \(config.dbPath): \(error) — check DATA_DIR/HYPEMAN_DB and permissions")
            exit(1)
        }
        let server = FCGIServer(socketPath: socket, threads: config.threads, socketGroup: access.group,
                                socketMode: access.socketMode, log: log) { index in
            try APIHandler(config: config, threadIndex: index, log: log)
        }
        do { try server.run() } catch {
            log("\(error)")
            exit(1)
        }
        log("stopped")
    }
}
