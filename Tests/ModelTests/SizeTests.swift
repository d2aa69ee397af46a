import Testing
@testable import Model

@Suite struct SizeTests {
    @Test func parsesBinaryUnitsCaseInsensitively() {
        #expect(Size.parse("1GB") == 1 << 30)
        #expect(Size.parse("1G") == 1 << 30)
        #expect(Size.parse("1gb") == 1 << 30)
        #expect(Size.parse("1 GB") == 1 << 30)
        #expect(Size.parse("512MB") == 512 << 20)
        #expect(Size.parse("2G") == 2 << 30)
        #expect(Size.parse("1024") == 1024)
        #expect(Size.parse("3kilobytes") == 3072)
    }

    @Test func rejectsDecimalsBitsIECAndJunk() {
        for bad in ["1.5GB", "1Gb", "1Mb", "1GiB", " 1GB", "-1GB", "", "GB", "1 XB", "99999999999999999999", "16EB"] {
            #expect(Size.parse(bad) == nil, "\(bad) must be rejected")
        }
    }

    @Test func refusesAmountsThatOverflowOnceMultipliedByTheUnit() {
        #expect(Size.parse("9223372036854775807") == Int64.max)
        #expect(Size.parse("9223372036854775808") == nil)
        #expect(Size.parse("9223372036854775807GB") == nil)
        #expect(Size.parse("8589934592GB") == nil)          // 2^33 GiB = 2^63 bytes
        #expect(Size.parse("8589934591GB") == 8589934591 << 30)
        #expect(Size.parse("7EB") == 7 << 60)
        #expect(Size.parse("8EB") == nil)
        #expect(Size.parse("99999999999999999999999999KB") == nil)
    }

    @Test func sumsAreCheckedNotTrapped() {
        #expect(Size.sum(7 << 60, 7 << 60) == nil)
        #expect(Size.sum(Int64.max, 1) == nil)
        #expect(Size.sum(Int64.max, 0) == Int64.max)
        #expect(Size.sum(1 << 30, 3 << 30) == 4 << 30)
        #expect(Size.sum(-1, 1) == nil)
        #expect(Size.sum([1 << 62, 1 << 61, 1 << 61]) == nil)
        #expect(Size.sum([1 << 30, 1 << 30, 1 << 30]) == 3 << 30)
        #expect(Size.sum([]) == 0)
    }

    @Test func formatsLikeTheReference() {
        #expect(Size.format(1 << 30) == "1024.0 MB")
        #expect(Size.format(512 << 20) == "512.0 MB")
        #expect(Size.format(3 << 30) == "3.0 GB")
        #expect(Size.format(10 << 30) == "10.0 GB")
        #expect(Size.format(3 << 29) == "1.5 GB")
        #expect(Size.format(5 << 30) == "5.0 GB")
        #expect(Size.format(100) == "100 B")
        #expect(Size.format(1025) == "1.0 KB")
    }
}

@Suite struct NameTests {
    @Test func resourceNames() {
        #expect(Names.isValidResourceName("web-1"))
        #expect(Names.isValidResourceName("a"))
        #expect(!Names.isValidResourceName("-a"))
        #expect(!Names.isValidResourceName("a-"))
        #expect(!Names.isValidResourceName("Web"))
        #expect(!Names.isValidResourceName(String(repeating: "a", count: 64)))
        #expect(Names.isValidResourceName(String(repeating: "a", count: 63)))
    }

    @Test func envKeys() {
        #expect(Names.isValidEnvKey("PATH"))
        #expect(Names.isValidEnvKey("_x9"))
        #expect(!Names.isValidEnvKey("9x"))
        #expect(!Names.isValidEnvKey("A;rm -rf /"))
        #expect(!Names.isValidEnvKey(""))
    }

    @Test func mountPathsAreCheckedByteWise() {
        // "/" followed by an emoji modifier or a combining mark is one grapheme, yet an absolute path.
        #expect(Names.mountPathProblem("/\u{1F3FB}q") == nil)
        #expect(Names.cleanAbsolutePath("/\u{1F3FB}q/./x/../y") == "/\u{1F3FB}q/y")
        #expect(Names.mountPathProblem("/etc/\u{0301}x") != nil)
        #expect(Names.mountPathProblem("/etc\u{0301}") == nil)
        #expect(Names.mountPathProblem("/\u{0301}/../etc") != nil)
    }

    @Test func mountPaths() {
        #expect(Names.mountPathProblem("/mnt/data") == nil)
        #expect(Names.mountPathProblem("relative") != nil)
        #expect(Names.mountPathProblem("/etc") != nil)
        #expect(Names.mountPathProblem("/usr/local/x") != nil)
        #expect(Names.mountPathProblem("/mnt/../etc/x") != nil)
        #expect(Names.mountPathProblem("/") != nil)
        #expect(Names.cleanAbsolutePath("/a//b/./c/../d") == "/a/b/d")
    }

    @Test func idsHaveTheCUID2Shape() {
        var seen = Set<String>()
        for _ in 0..<2000 {
            let id = CUID2.make()
            #expect(id.count == 24)
            #expect(CUID2.looksLikeID(id))
            seen.insert(id)
        }
        #expect(seen.count == 2000)
    }

    @Test func stateGateMessages() {
        #expect(InstanceOperation.stop.gate(.standby)?.message == "invalid state transition: cannot stop from state Standby, must be Running")
        #expect(InstanceOperation.standby.gate(.stopped)?.message == "invalid state transition: cannot standby from state Stopped")
        #expect(InstanceOperation.restore.gate(.running)?.message == "invalid state transition: cannot restore from state Running")
        #expect(InstanceOperation.start.gate(.stopped) == nil)
        #expect(InstanceOperation.delete.gate(.unknown) == nil)
        #expect(InstanceOperation.start.gate(.running)?.status == 409)
        #expect(InstanceOperation.stop.gate(.initializing) == nil)
        #expect(InstanceOperation.standby.gate(.initializing)?.status == 409)
    }
}
