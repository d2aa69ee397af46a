import AgentProtocol
import Glibc
import Testing

/// The virtio-serial link without a VM: the agent runs in its own mount namespace with a fake
/// /sys/class (virtio-ports/<entry>/name) bind-mounted over the real one, and `--dev` points
/// `<entry>` at a raw-mode pty slave. The test holds the master: closing it is a host hangup.
extension HostMountSuites {
@Suite(.enabled(if: getuid() == 0 && access("/usr/bin/unshare", X_OK) == 0,
                "needs root and unshare to fake /sys/class/virtio-ports in a private mount namespace"))
struct VirtioPortTests {
    static let portName = "org.hypeman.agent.0"

    /// A pty master (the "host" end) and its slave's path, the slave in raw mode.
    private func openRawPty() throws -> (master: Int32, slave: String) {
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard master >= 0 else { throw AgentTestError("open /dev/ptmx: \(String(cString: strerror(errno)))") }
        var unlock: Int32 = 0
        var number: UInt32 = 0
        guard ioctl(master, UInt(0x4004_5431), &unlock) == 0, ioctl(master, UInt(0x8004_5430), &number) == 0 else {
            close(master)
            throw AgentTestError("cannot unlock the pty")
        }
        let slave = "/dev/pts/\(number)"
        let fd = open(slave, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { close(master); throw AgentTestError("open \(slave) failed") }
        var settings = termios()
        tcgetattr(fd, &settings)
        cfmakeraw(&settings)
        tcsetattr(fd, TCSANOW, &settings)
        close(fd)
        return (master, slave)
    }

    private func cpuTicks(_ pid: pid_t) -> Int {
        guard let stat = readText("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
        return fields.count > 12 ? (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0) : 0
    }

    @Test func portIsFoundWhenItAppearsAndAHangupKillsItsSessions() throws {
        let dir = try TempDirectory("virtio")
        defer { dir.remove() }
        try dir.makeDirectory("class/virtio-ports")
        try dir.makeDirectory("dev")
        let pty = try openRawPty()
        let host = AgentClient(descriptor: pty.master)
        try dir.symlink("dev/vport9p1", to: pty.slave)

        let agent = try AgentProcess(
            label: "virtio", arguments: ["--virtio-port", VirtioPortTests.portName, "--dev", "\(dir.path)/dev"], directory: dir,
            launcher: ["/usr/bin/unshare", "-m", "/bin/sh", "-c", "mount --bind \"$0\" /sys/class && exec \"$@\"", "\(dir.path)/class"])
        defer { agent.stop() }
        #expect(waitUntil(5) { agent.log.contains("not present yet") }, "\(agent.log)")

        // The port shows up (no udev: the agent re-checks every 500 ms).
        try dir.makeDirectory("class/virtio-ports/vport9p1")
        try dir.write("class/virtio-ports/vport9p1/name", "\(VirtioPortTests.portName)\n")
        #expect(waitUntil(3) { agent.log.contains("link up: virtio-serial \(VirtioPortTests.portName)") }, "\(agent.log)")

        let hello = try host.hello()
        #expect(hello.agent == "hypeman-agent 1")
        try host.start(1, ExecStart(command: ["sh", "-c", "echo $$; exec sleep 1000"]))
        let text = try host.waitOutput(1, containing: "\n")
        let pid = try #require(pid_t(text.trimmingSpaces))

        // The host goes away: POLLHUP on the port, the session dies, the agent does not spin.
        host.close()
        #expect(waitUntil(3) { kill(pid, 0) != 0 && errno == ESRCH }, "sleep survived the hangup\n\(agent.log)")
        #expect(agent.log.contains("link down: virtio-serial \(VirtioPortTests.portName)"))
        let before = cpuTicks(agent.pid)
        usleep(1_000_000)
        let used = cpuTicks(agent.pid) - before
        #expect(used < 20, "the agent used \(used) ticks in 1 s while no host was connected")
    }
}
}
