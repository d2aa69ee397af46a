import Glibc
import AgentProtocol

/// Everything a session's child needs, turned into C strings before the fork.
struct LaunchPlan {
    let argv0: String
    let cwd: String
    let root: String
    /// argv0 was looked up in PATH (it has no "/").
    let searchedPath: Bool
    let argv: CStringArray
    let envp: CStringArray
    let candidates: CStringArray
    let rootPath: CString?
    let cwdPath: CString

    /// The plan for `request`: empty command = /bin/sh; environment = env file + request env
    /// (+ TERM=xterm for a tty without TERM); cwd = request cwd, else the image's workdir, else /.
    init(_ request: ExecStart, options: AgentOptions) {
        let command = request.command.isEmpty ? ["/bin/sh"] : request.command
        var env = ExecEnvironment.merge(ExecEnvironment.base(envFile: options.envFile), request.env)
        if request.tty && ExecEnvironment.value("TERM", in: env) == nil { env.append("TERM=xterm") }
        let path = ExecEnvironment.value("PATH", in: env) ?? ExecEnvironment.fallbackPath
        argv0 = command[0]
        cwd = request.cwd.isEmpty ? ExecEnvironment.workdir(file: options.workdirFile) : request.cwd
        root = options.root
        searchedPath = !argv0.contains("/")
        argv = CStringArray(command)
        envp = CStringArray(env)
        candidates = CStringArray(ExecEnvironment.candidates(for: argv0, path: path))
        rootPath = options.root == "/" ? nil : CString(options.root)
        cwdPath = CString(cwd)
    }
}

/// Why a child could not start its command: the step and its errno.
struct LaunchFailure: Error {
    enum Stage: Int32 { case fork = 0, terminal = 1, chroot = 2, workdir = 3, exec = 4 }
    var stage: Stage
    var code: Int32

    /// 127 when the executable does not exist, 126 for every other failure.
    var exitCode: Int32 { stage == .exec && (code == ENOENT || code == ENOTDIR) ? 127 : 126 }

    /// What the host shows the user.
    func message(_ plan: LaunchPlan) -> String {
        switch stage {
        case .fork: return "cannot start a process: \(errnoText(code))"
        case .terminal: return "cannot open the session's terminal: \(errnoText(code))"
        case .chroot: return "cannot enter the app root \(plan.root): \(errnoText(code))"
        case .workdir: return "working directory \(plan.cwd): \(errnoText(code))"
        case .exec:
            if exitCode == 127 && plan.searchedPath { return "executable file not found in $PATH: \(plan.argv0)" }
            return "\(plan.argv0): \(errnoText(code))"
        }
    }
}
