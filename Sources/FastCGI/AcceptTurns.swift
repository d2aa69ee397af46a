#if canImport(Glibc)
import Glibc
#endif

/// Which worker thread accepts the next connection, and when.
///
/// Left to the kernel, every idle thread sits in `accept` and the one that has waited longest
/// gets the next connection: each request costs a sleep and a wake-up, and requests rotate through
/// all threads, each finding its stack, its SQLite connection and its malloc arena cold. In
/// bench/api, 2 workers × 8 threads spent ~40% more CPU per request than 2 × 1.
///
/// So one thread holds the turn: it accepts, handles the request and accepts again, without
/// waking anybody, while the other threads sleep. Threads exist for slow requests (jobs waited
/// on, log streams, uploads, writes waiting for the database lock): when the holder has been busy
/// with one request for longer than `patience`, a monitor thread hands the turn to the thread that
/// went idle last (the one whose memory is warmest), which accepts while the slow request goes on.
/// A holder whose `accept` fails (shutdown) hands the turn on at once.
final class AcceptTurns: @unchecked Sendable {
    /// One per worker thread. Its state is guarded by the turns' mutex.
    final class Waiter: @unchecked Sendable {
        fileprivate let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        /// Woken with the turn. Guarded by the turns' mutex.
        fileprivate var called = false
        /// Holds the turn. Guarded by the turns' mutex.
        fileprivate var holdsTurn = false
        init() { pthread_cond_init(cond, nil) }
        deinit {
            pthread_cond_destroy(cond)
            cond.deallocate()
        }
    }

    /// How long one request may keep the turn before another thread takes over accepting.
    let patienceNs: UInt64

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let monitorCond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // All guarded by `mutex`.
    /// Idle threads, the most recent last.
    private var idle: [Waiter] = []
    private var holder: Waiter?
    /// When the holder started on its current request (monotonic ns); 0 while it is accepting.
    private var handlingSince: UInt64 = 0
    /// The monitor waits without a deadline and must be signalled when a request starts.
    private var monitorIdle = false
    private var stopped = false

    init(patienceMs: Double = 2) {
        patienceNs = UInt64(patienceMs * 1_000_000)
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(monitorCond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(monitorCond)
        monitorCond.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Returns when `w` holds the turn (at once when it kept it through its last request).
    func take(_ w: Waiter) {
        pthread_mutex_lock(mutex)
        if !w.holdsTurn {
            if holder == nil {
                holder = w
                w.holdsTurn = true
            } else {
                idle.append(w)
                while !w.called { pthread_cond_wait(w.cond, mutex) }
                w.called = false
            }
        }
        pthread_mutex_unlock(mutex)
    }

    /// `w` accepted a request and starts on it, keeping the turn for now.
    func startHandling(_ w: Waiter) {
        pthread_mutex_lock(mutex)
        if holder === w {
            handlingSince = Self.now()
            if monitorIdle { pthread_cond_signal(monitorCond) }
        }
        pthread_mutex_unlock(mutex)
    }

    /// `w` is done with its request; if it still holds the turn it accepts next.
    func finishHandling(_ w: Waiter) {
        pthread_mutex_lock(mutex)
        if holder === w { handlingSince = 0 }
        pthread_mutex_unlock(mutex)
    }

    /// `w` gives up the turn (its accept failed).
    func pass(_ w: Waiter) {
        pthread_mutex_lock(mutex)
        if holder === w { handOff() }
        pthread_mutex_unlock(mutex)
    }

    /// Under `mutex`: the turn goes to the thread that went idle last, or becomes free.
    private func handOff() {
        holder?.holdsTurn = false
        handlingSince = 0
        if let next = idle.popLast() {
            holder = next
            next.holdsTurn = true
            next.called = true
            pthread_cond_signal(next.cond)
        } else {
            holder = nil
        }
    }

    /// The monitor: runs on its own thread until `stop`, handing the turn on whenever its holder
    /// has spent more than `patience` on one request. Sleeps without a deadline while no request
    /// is being handled, and wakes at most once per `patience` under load.
    func monitor() {
        pthread_mutex_lock(mutex)
        while !stopped {
            if holder == nil || handlingSince == 0 {
                monitorIdle = true
                pthread_cond_wait(monitorCond, mutex)
                monitorIdle = false
                continue
            }
            let deadline = handlingSince + patienceNs
            if Self.now() >= deadline {
                handOff()
                continue
            }
            var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
            pthread_cond_timedwait(monitorCond, mutex, &ts)
        }
        pthread_mutex_unlock(mutex)
    }

    /// Ends `monitor`.
    func stop() {
        pthread_mutex_lock(mutex)
        stopped = true
        pthread_cond_signal(monitorCond)
        pthread_mutex_unlock(mutex)
    }

    /// How many threads wait for the turn (for tests).
    var waitingCount: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return idle.count
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
