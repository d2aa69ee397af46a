import AgentProtocol
import Glibc

/// A mount request waiting for its disk(s) to be hotplugged.
struct PendingMount {
    let link: Link
    let stream: UInt32
    let request: MountRequest
    let giveUpAt: Int64
    var nextCheck: Int64
}

extension Agent {
    /// How long a mount waits for its disk to appear.
    static let diskWaitMilliseconds: Int64 = 10_000
    static let diskRecheckMilliseconds: Int64 = 100

    func startMount(_ frame: Frame, on link: Link) {
        let request: MountRequest
        do { request = try MountRequest(decoding: frame.payload) } catch {
            return reply(link, frame.stream, RequestResult(ok: false, message: "bad mount request: \(error)"))
        }
        guard VolumeMounter.isValidSerial(request.serial),
              request.mode != .overlay || VolumeMounter.isValidSerial(request.overlaySerial) else {
            return reply(link, frame.stream, RequestResult(ok: false, message: "mount request has an empty or invalid disk serial"))
        }
        let now = monotonicMilliseconds()
        let pending = PendingMount(link: link, stream: frame.stream, request: request, giveUpAt: now + Agent.diskWaitMilliseconds, nextCheck: now)
        if !attemptMount(pending, now: now) {
            log("waiting for the disk of volume \(request.serial)")
            pendingMounts.append(pending)
        }
    }

    /// Mounts when the disk(s) are there, or fails once the wait is over. True when answered.
    private func attemptMount(_ pending: PendingMount, now: Int64) -> Bool {
        let request = pending.request
        let device = mounter.device(serial: request.serial)
        let overlayDevice = request.mode == .overlay ? mounter.device(serial: request.overlaySerial) : nil
        guard let device, request.mode != .overlay || overlayDevice != nil else {
            guard now >= pending.giveUpAt else { return false }
            let missing = device == nil ? request.serial : request.overlaySerial
            reply(pending.link, pending.stream, RequestResult(ok: false,
                message: "no disk with serial \(missing) appeared in \(options.sysBlock) within \(Agent.diskWaitMilliseconds / 1000) s; is the volume attached?"))
            return true
        }
        reply(pending.link, pending.stream, mounter.mount(request, device: device, overlayDevice: overlayDevice))
        return true
    }

    func retryPendingMounts(_ now: Int64) {
        var waiting: [PendingMount] = []
        for var pending in pendingMounts {
            if now >= pending.nextCheck {
                if attemptMount(pending, now: now) { continue }
                pending.nextCheck = now + Agent.diskRecheckMilliseconds
            }
            waiting.append(pending)
        }
        pendingMounts = waiting
    }

    func unmount(_ frame: Frame, on link: Link) {
        do {
            let request = try UnmountRequest(decoding: frame.payload)
            reply(link, frame.stream, mounter.unmount(request))
        } catch {
            reply(link, frame.stream, RequestResult(ok: false, message: "bad unmount request: \(error)"))
        }
    }

    private func reply(_ link: Link, _ stream: UInt32, _ result: RequestResult) {
        if !result.ok { log("request on stream \(stream): \(result.message)") }
        link.send(.result, stream: stream, payload: result.encode())
    }
}
