import Foundation
import Testing
@testable import CloudHypervisorDriver
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// Adoption proves the pid is this VM's VMM before anything is signalled.
@Suite(.enabled(if: StandIn.available, "needs python3 with PyYAML and jsonschema (the CH stand-in)"))
struct CHProcessCheckTests {
    @Test func spawnRecordsTheProcessAndAdoptionChecksIt() throws {
        let box = try Sandbox()
        let driver = box.driver()
        let vm = try box.launch(driver)
        defer { vm.kill() }
        #expect(vm.process.handle.usesPidfd)
        let rec = try #require(VMMProcessRecord.read(runDir: box.spec.runDir), "spawn writes the record")
        #expect(rec.pid == vm.pid)
        #expect(rec.startTime == ProcFacts.stat(vm.pid)?.startTime)
        guard case .success = CHProcess.adopt(pid: vm.pid, apiSocketPath: box.apiSocket) else {
            Issue.record("the live VMM was refused"); return
        }
        // An unrelated live process (the test runner itself is not allowed; use a sleep).
        var sleeper: pid_t = 0
        var args: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("300"), nil]
        defer { for a in args { free(a) } }
        #expect(posix_spawn(&sleeper, "/bin/sleep", nil, nil, &args, environ) == 0)
        defer { kill(sleeper, SIGKILL); var st: Int32 = 0; waitpid(sleeper, &st, 0) }
        usleep(50_000)
        guard case .failure(.markerMissing) = CHProcess.adopt(pid: sleeper, apiSocketPath: box.apiSocket) else {
            Issue.record("sleep was adopted as the VMM"); return
        }
        // The same pid with another start time recorded (as after a reboot and pid reuse): refused.
        var other = rec
        other.startTime += 7
        other.write(runDir: box.spec.runDir)
        guard case .failure(.startTimeDiffers) = CHProcess.adopt(pid: vm.pid, apiSocketPath: box.apiSocket) else {
            Issue.record("a start-time mismatch was adopted"); return
        }
        #expect(driver.attach(box.spec, pid: vm.pid) == nil, "attach refuses it too")
        #expect(try vm.state() == .running, "refusals signal nothing")
        rec.write(runDir: box.spec.runDir)
        let again = try #require(driver.attach(box.spec, pid: vm.pid))
        again.kill()
        #expect(processGone(vm.pid))
        #expect(VMMProcessRecord.read(runDir: box.spec.runDir) == nil, "the record goes with the process")
    }
}
