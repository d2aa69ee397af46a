import Glibc

// hypeman-agent: the guest agent. It serves the host over virtio-serial ports, vsock or Unix
// sockets (see AgentOptions.usage), speaking the frames of AgentProtocol: exec sessions in the
// app root and volume mounts. Agent.swift holds the event loop.
ensureStandardDescriptors()
closeInheritedDescriptorsOnExec()

var options: AgentOptions
do {
    options = try AgentOptions.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    log("\(error.message)\n\(AgentOptions.usage)")
    exit(2)
}
guard let realRoot = realpath(options.root, nil) else {
    log("the app root \(options.root) does not exist (\(errnoText(errno))); pass an existing --root")
    exit(1)
}
options.root = String(cString: realRoot)
free(realRoot)

guard let signalFD = SignalPipe.install() else {
    log("cannot create the signal pipe: \(errnoText(errno))")
    exit(1)
}
do {
    let agent = try Agent(options: options, signalFD: signalFD)
    let links = options.virtioPorts.map { "virtio-serial \($0)" } + agent.listeners.map(\.name)
    log("start: root \(options.root), kernel \(agent.kernel), links: \(links.joined(separator: ", "))")
    agent.run()
} catch {
    log("cannot start: \(error)")
    exit(1)
}
