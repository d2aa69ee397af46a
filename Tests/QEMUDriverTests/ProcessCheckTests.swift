import Foundation
import Glibc
import Testing
import VMM
@testable import QEMUDriver

extension RealQEMUTests {
/// Adoption proves the pid is this VM's QEMU (marker, start time, boot) before anything is signalled.
@Suite(.enabled(if: QEMUEnv.available, Comment(rawValue: QEMUEnv.missing)))
struct QEMUProcessCheckTests {
    let driver = QEMUEnv.driver

    @Test func spawnRecordsTheProcessAndAttachChecksIt() throws {
        let g = try TestGuest("pidcheck")
        defer { g.remove() }
        let spec = g.spec(kernel: try g.haltingKernel())
        let vm = try driver.launchVM(spec)
        defer { vm.kill() }
        #expect(vm.process.handle.usesPidfd)
        let rec = try #require(VMMProcessRecord.read(runDir: spec.runDir), "spawn writes the record")
        #expect(rec.pid == vm.pid && rec.startTime == ProcFacts.stat(vm.pid)?.startTime)
        let qmp = QEMUArgs.qmpSocketPath(spec)
        // An unrelated live process is refused with the reason.
        var sleeper: pid_t = 0
        var args: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("300"), nil]
        defer { for a in args { free(a) } }
        #expect(posix_spawn(&sleeper, "/bin/sleep", nil, nil, &args, environ) == 0)
        defer { kill(sleeper, SIGKILL); var st: Int32 = 0; waitpid(sleeper, &st, 0) }
        usleep(50_000)
        guard case .failure(.markerMissing) = QEMUProcess.check(pid: sleeper, marker: qmp, runDir: spec.runDir) else {
            Issue.record("sleep was adopted as QEMU"); return
        }
        #expect(driver.attachVM(spec, pid: sleeper) == nil)
        // The recorded boot differs (the host rebooted since): refused, nothing signalled.
        var other = rec
        other.bootID = "00000000-0000-0000-0000-000000000000"
        other.write(runDir: spec.runDir)
        guard case .failure(.otherBoot) = QEMUProcess.check(pid: vm.pid, marker: qmp, runDir: spec.runDir) else {
            Issue.record("a record from another boot was accepted"); return
        }
        try vm.qmp().close()
        #expect(driver.attachVM(spec, pid: vm.pid) == nil)
        #expect(try vm.state() == .running)
        try vm.qmp().close()   // QEMU serves one monitor client at a time
        rec.write(runDir: spec.runDir)
        let again = try #require(driver.attachVM(spec, pid: vm.pid))
        again.kill()
        #expect(QEMUEnv.processGone(vm.pid))
        #expect(VMMProcessRecord.read(runDir: spec.runDir) == nil, "the record goes with the process")
    }
}
}
