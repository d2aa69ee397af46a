import Glibc

/// Pseudo-terminals through /dev/ptmx (posix_openpt and friends are not in the Glibc module).
enum Pty {
    // asm-generic ioctl numbers (x86_64, arm64): _IOW('T', 0x31, int) and _IOR('T', 0x30, unsigned int).
    static let unlockRequest: UInt = 0x4004_5431   // TIOCSPTLCK
    static let numberRequest: UInt = 0x8004_5430   // TIOCGPTN

    /// A new, unlocked pty master (non-blocking, close-on-exec) and its slave's path, or errno.
    static func open() -> Result<(master: Int32, slavePath: String), PosixError> {
        let master = Glibc.open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK)
        guard master >= 0 else { return .failure(PosixError(errno, "open /dev/ptmx")) }
        var unlock: Int32 = 0
        var number: UInt32 = 0
        guard ioctl(master, unlockRequest, &unlock) == 0, ioctl(master, numberRequest, &number) == 0 else {
            let e = PosixError(errno, "unlock the pty")
            close(master)
            return .failure(e)
        }
        return .success((master, "/dev/pts/\(number)"))
    }

    /// Sets the terminal size (TIOCSWINSZ); zero rows or columns leave it unchanged.
    @discardableResult
    static func setWindowSize(_ fd: Int32, rows: UInt32, cols: UInt32) -> Bool {
        guard rows > 0, cols > 0 else { return false }
        var size = winsize(ws_row: UInt16(clamping: rows), ws_col: UInt16(clamping: cols), ws_xpixel: 0, ws_ypixel: 0)
        return ioctl(fd, UInt(TIOCSWINSZ), &size) == 0
    }
}

/// A failed syscall: what was being done and its errno.
struct PosixError: Error, CustomStringConvertible {
    var code: Int32
    var what: String
    init(_ code: Int32, _ what: String) { self.code = code; self.what = what }
    var description: String { "\(what): \(errnoText(code))" }
}
