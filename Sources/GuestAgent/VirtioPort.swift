import Glibc

/// Finds a named virtio-serial port. There is no udev in the guest: the port shows up as
/// /sys/class/virtio-ports/<entry>/name containing NAME, and its device is /dev/<entry>.
final class VirtioPort {
    static let classDirectory = "/sys/class/virtio-ports"
    /// How often a missing port is looked for again.
    static let retryMilliseconds: Int64 = 500

    let name: String
    let devDirectory: String
    /// The link once the device is open.
    var link: Link?
    var nextCheck: Int64 = 0
    private var reportedMissing = false

    init(name: String, devDirectory: String) { self.name = name; self.devDirectory = devDirectory }

    /// Opens the port's device if it exists now (O_RDWR|O_NONBLOCK|O_CLOEXEC); logs once while
    /// it does not.
    func tryOpen() -> (fd: Int32, device: String)? {
        let entry = directoryEntries(VirtioPort.classDirectory).first {
            readTrimmedLine("\(VirtioPort.classDirectory)/\($0)/name") == name
        }
        if let entry {
            let device = "\(devDirectory)/\(entry)"
            let fd = open(device, O_RDWR | O_NONBLOCK | O_CLOEXEC)
            if fd >= 0 { return (fd, device) }
            if !reportedMissing { log("virtio-serial port \(name): cannot open \(device) (\(errnoText(errno))); retrying") }
        } else if !reportedMissing {
            log("virtio-serial port \(name) not present yet; waiting for it")
        }
        reportedMissing = true
        return nil
    }

    /// Whether a host is connected: the port polls POLLHUP while nobody is on the other end.
    static func hostConnected(_ fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) >= 0 && p.revents & Int16(POLLHUP) == 0
    }
}
