import Testing
import Foundation
import Synchronization
@testable import FastCGI

/// The FastCGI workers' accept turns: one thread at a time; it keeps the turn through quick
/// requests; a slow one makes the monitor hand the turn to the most recently idle thread.
@Suite struct AcceptTurnsTests {
    /// Polls `cond` until it holds or `seconds` pass.
    func eventually(_ seconds: Double = 5, _ cond: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if cond() { return true }
            usleep(1000)
        }
        return cond()
    }

    @Test func idleThreadsGetTheTurnLastInFirstOut() throws {
        let turns = AcceptTurns()
        let order = Mutex<[Int]>([])
        let first = AcceptTurns.Waiter()
        turns.take(first)   // free turn: returns at once
        for i in 0..<3 {
            Thread {
                let w = AcceptTurns.Waiter()
                turns.take(w)
                order.withLock { $0.append(i) }
                turns.pass(w)
            }.start()
            // Enqueue one at a time so "most recent" is well defined.
            #expect(eventually { turns.waitingCount == i + 1 })
        }
        #expect(order.withLock { $0 }.isEmpty, "nobody runs while the turn is held")
        turns.pass(first)
        #expect(eventually { order.withLock { $0.count } == 3 })
        #expect(order.withLock { $0 } == [2, 1, 0])
        // The last one found nobody waiting, so the turn is free again.
        let again = Mutex(false)
        Thread { turns.take(AcceptTurns.Waiter()); again.withLock { $0 = true } }.start()
        #expect(eventually { again.withLock { $0 } })
    }

    @Test func aQuickRequestKeepsTheTurnWithoutWakingAnybody() throws {
        let turns = AcceptTurns()
        let holder = AcceptTurns.Waiter()
        turns.take(holder)
        let woken = Mutex(false)
        Thread { turns.take(AcceptTurns.Waiter()); woken.withLock { $0 = true } }.start()
        #expect(eventually { turns.waitingCount == 1 })
        for _ in 0..<100 {
            turns.startHandling(holder)
            turns.finishHandling(holder)
            turns.take(holder)   // still the holder: returns at once
        }
        usleep(20_000)
        #expect(!woken.withLock { $0 })
        #expect(turns.waitingCount == 1)
        turns.pass(holder)
        #expect(eventually { woken.withLock { $0 } })
    }

    @Test func theMonitorHandsTheTurnOnDuringASlowRequest() throws {
        let turns = AcceptTurns(patienceMs: 5)
        let monitorDone = Mutex(false)
        Thread { turns.monitor(); monitorDone.withLock { $0 = true } }.start()
        let slow = AcceptTurns.Waiter()
        turns.take(slow)
        let next = Mutex(false)
        Thread { turns.take(AcceptTurns.Waiter()); next.withLock { $0 = true } }.start()
        #expect(eventually { turns.waitingCount == 1 })
        turns.startHandling(slow)
        #expect(eventually(2) { next.withLock { $0 } }, "the waiting thread got the turn while the request went on")
        // The slow thread, done at last, queues behind the new holder.
        turns.finishHandling(slow)
        let queued = Mutex(false)
        Thread { turns.take(slow); queued.withLock { $0 = true } }.start()
        #expect(eventually { turns.waitingCount == 1 })
        #expect(!queued.withLock { $0 })
        turns.stop()
        #expect(eventually { monitorDone.withLock { $0 } })
    }

    @Test func oneHolderAtATimeUnderContention() throws {
        let turns = AcceptTurns(patienceMs: 0.05)
        Thread { turns.monitor() }.start()
        defer { turns.stop() }
        let holders = Atomic<Int>(0), maxHolders = Atomic<Int>(0), done = Atomic<Int>(0)
        for t in 0..<8 {
            Thread {
                let w = AcceptTurns.Waiter()
                for i in 0..<300 {
                    turns.take(w)
                    let now = holders.wrappingAdd(1, ordering: .sequentiallyConsistent).newValue
                    _ = maxHolders.max(now, ordering: .sequentiallyConsistent)
                    holders.wrappingSubtract(1, ordering: .sequentiallyConsistent)
                    turns.startHandling(w)
                    if (i + t) % 7 == 0 { usleep(200) }   // now and then slow enough for the monitor
                    turns.finishHandling(w)
                    if i % 3 == 0 { turns.pass(w) }
                }
                turns.pass(w)
                done.wrappingAdd(1, ordering: .sequentiallyConsistent)
            }.start()
        }
        #expect(eventually(30) { done.load(ordering: .sequentiallyConsistent) == 8 }, "a waiter was never woken")
        #expect(maxHolders.load(ordering: .sequentiallyConsistent) == 1, "two threads held the turn at once")
        #expect(turns.waitingCount == 0)
    }
}
