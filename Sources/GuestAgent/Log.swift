import Glibc

/// One line on stderr (the guest console, i.e. the instance's app.log), prefixed so it can be
/// told apart from the app's own output.
func log(_ message: String) {
    var line = Array("[hypeman-agent] \(message)\n".utf8)
    line.withUnsafeMutableBytes { raw in
        var offset = 0
        while offset < raw.count {
            let n = write(2, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            offset += n
        }
    }
}
