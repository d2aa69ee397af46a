import Foundation
import Testing
@testable import GuestBoot

/// A value that breaks naive quoting: single and double quotes, $, backticks, backslashes,
/// newlines, a tab, a glob and non-ASCII.
let trickyValue = "it's a \"test\" $HOME `id` $(id) \\ back\\slash\nsecond line\n\ttab * ? [x] ünï 'end'"

@Suite struct ConfigDiskTests {
    let config = GuestConfig(
        instanceID: "inst123", instanceName: "web-1", image: "docker.io/library/app:1",
        entrypoint: ["/usr/bin/app", "--name=a b", "it's"], cmd: ["$HOME", "`x`", ""],
        workdir: "/srv/app",
        imageEnv: ["PATH=/usr/local/bin:/usr/bin:/bin", "FOO=from-image", "BAD-KEY=x", "NOEQUALS", "EMPTY="],
        env: ["FOO": "from-instance", "TRICKY": trickyValue, "ZED": "last"],
        network: .init(ip: "10.100.0.7", prefixLength: 16, gateway: "10.100.0.1", dns: "1.1.1.1"),
        volumes: [.init(device: "vdd", mountPath: "/mnt/data", mode: .readWrite),
                  .init(device: "vde", mountPath: "/mnt/ro/", mode: .readOnly),
                  .init(device: "vdf", mountPath: "/mnt/ov", mode: .overlay, overlayDevice: "vdg")])

    @Test func quoting() {
        #expect(ConfigDisk.shellQuote("a'b") == #"'a'\''b'"#)
        #expect(ConfigDisk.shellQuote("") == "''")
        #expect(ConfigDisk.shellWordList(["a b", "c"]) == "'a b' 'c'")
    }

    @Test func mergesEnvImageFirstInstanceOverrides() throws {
        let (env, skipped) = try ConfigDisk.mergedEnvironment(imageEnv: config.imageEnv, instanceEnv: config.env)
        #expect(env.map(\.key) == ["PATH", "FOO", "EMPTY", "TRICKY", "ZED"])
        #expect(env.first { $0.key == "FOO" }?.value == "from-instance")
        #expect(env.first { $0.key == "EMPTY" }?.value == "")
        #expect(skipped == ["BAD-KEY", "NOEQUALS"])
        #expect(throws: GuestBootError.self) { try ConfigDisk.mergedEnvironment(imageEnv: [], instanceEnv: ["A;rm": "x"]) }
        #expect(throws: GuestBootError.self) { try ConfigDisk.mergedEnvironment(imageEnv: [], instanceEnv: ["1A": "x"]) }
        #expect(throws: GuestBootError.self) { try ConfigDisk.mergedEnvironment(imageEnv: [], instanceEnv: ["A": "x\u{0}y"]) }
    }

    @Test func configScriptLayout() throws {
        let s = try ConfigDisk.renderConfigScript(config)
        #expect(s.contains("WORKDIR='/srv/app'\n"))
        #expect(s.contains("GUEST_IP='10.100.0.7'\nGUEST_CIDR='16'\nGUEST_GW='10.100.0.1'\nGUEST_DNS='1.1.1.1'\n"))
        #expect(s.contains("VOLUME_MOUNTS='vdd:/mnt/data:rw vde:/mnt/ro:ro vdf:/mnt/ov:overlay:vdg'\n"))
        #expect(s.contains("GUEST_HOSTNAME='web-1'\n"))
        #expect(s.contains("    export FOO='from-instance'\n"))
        #expect(!s.contains("BAD-KEY"))
        var noNet = config
        noNet.network = nil
        noNet.volumes = []
        let t = try ConfigDisk.renderConfigScript(noNet)
        #expect(!t.contains("GUEST_IP") && !t.contains("VOLUME_MOUNTS"))
    }

    /// The shell reads back exactly what went in: run config.sh through busybox sh on the host.
    @Test func shellReadsValuesBackExactly() throws {
        let sh = "/bin/busybox"
        guard FileManager.default.isExecutableFile(atPath: sh) else {
            print("SKIP shellReadsValuesBackExactly: /bin/busybox missing (apt-get install busybox-static)")
            return
        }
        let dir = try TestSupport.tempDir("cfgsh")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try TestSupport.write(try ConfigDisk.renderConfigScript(config), to: dir + "/config.sh")
        // Print each argv word and the env values NUL-separated, then compare bytes.
        let probe = """
        . \(dir)/config.sh
        eval "set -- $ENTRYPOINT $CMD"
        for a in "$@"; do printf '%s\\0' "$a"; done
        printf '%s\\0' "$WORKDIR" "$VOLUME_MOUNTS"
        ( hypeman_app_env; printf '%s\\0' "$TRICKY" "$FOO" "$PATH" "$EMPTY" "${ZED}" )
        """
        let r = try TestSupport.run(sh, ["sh", "-c", probe])
        #expect(r.status == 0, "\(r.output)")
        let got = r.output.split(separator: "\0", omittingEmptySubsequences: false).map(String.init)
        let want = config.entrypoint + config.cmd + ["/srv/app", "vdd:/mnt/data:rw vde:/mnt/ro:ro vdf:/mnt/ov:overlay:vdg",
                                                     trickyValue, "from-instance", "/usr/local/bin:/usr/bin:/bin", "", "last", ""]
        #expect(got == want)
    }

    @Test func rejectsUnsafeConfig() {
        var c = config
        c.volumes = [.init(device: "vdd", mountPath: "/mnt/a b", mode: .readWrite)]
        #expect(throws: GuestBootError.self) { try ConfigDisk.renderConfigScript(c) }
        c.volumes = [.init(device: "vdd", mountPath: "/mnt/a:b", mode: .readWrite)]
        #expect(throws: GuestBootError.self) { try ConfigDisk.renderConfigScript(c) }
        c.volumes = [.init(device: "sda", mountPath: "/mnt/a", mode: .readWrite)]
        #expect(throws: GuestBootError.self) { try ConfigDisk.renderConfigScript(c) }
        c.volumes = [.init(device: "vdd", mountPath: "/mnt/a", mode: .overlay)]
        #expect(throws: GuestBootError.self) { try ConfigDisk.renderConfigScript(c) }
        c.volumes = [.init(device: "vdd", mountPath: "relative", mode: .readOnly)]
        #expect(throws: GuestBootError.self) { try ConfigDisk.renderConfigScript(c) }
        c.volumes = []
        c.network = .init(ip: "10.0.0.300", prefixLength: 16, gateway: "10.0.0.1", dns: "1.1.1.1")
        #expect(throws: GuestBootError.self) { try ConfigDisk.renderConfigScript(c) }
        c.network = .init(ip: "10.0.0.3", prefixLength: 33, gateway: "10.0.0.1", dns: "1.1.1.1")
        #expect(throws: GuestBootError.self) { try ConfigDisk.renderConfigScript(c) }
        c.network = nil
        c.entrypoint = []
        c.cmd = []
        #expect(throws: GuestBootError.self) { try ConfigDisk.renderConfigScript(c) }
    }

    @Test func metadataJSON() throws {
        let text = try ConfigDisk.renderMetadataJSON(config)
        let obj = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect(obj?["instance_id"] as? String == "inst123")
        #expect(obj?["instance_name"] as? String == "web-1")
        #expect(obj?["image"] as? String == "docker.io/library/app:1")
        #expect(obj?["entrypoint"] as? [String] == config.entrypoint)
        #expect(obj?["cmd"] as? [String] == config.cmd)
        #expect(obj?["workdir"] as? String == "/srv/app")
        let env = obj?["env"] as? [String: String]
        #expect(env?["TRICKY"] == trickyValue)
        #expect(env?["FOO"] == "from-instance")
        #expect(text.hasPrefix("{\"instance_id\":"))
    }

    @Test func buildsReadableExt4() throws {
        guard let debugfs = TestSupport.which("debugfs"), TestSupport.which("mkfs.ext4") != nil else {
            print("SKIP buildsReadableExt4: e2fsprogs (mkfs.ext4, debugfs) not installed")
            return
        }
        let dir = try TestSupport.tempDir("cfgdisk")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/config.ext4"
        try ConfigDisk.build(config, at: path)
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        #expect(attrs[.posixPermissions] as? Int == 0o600)
        #expect((attrs[.size] as? Int ?? 0) >= 1 << 20)
        let cat = try TestSupport.run(debugfs, ["-R", "cat /config.sh", path])
        #expect(cat.output.contains(try ConfigDisk.renderConfigScript(config)), "\(cat.output)")
        let meta = try TestSupport.run(debugfs, ["-R", "cat /metadata.json", path])
        #expect(meta.output.contains(try ConfigDisk.renderMetadataJSON(config)))
        // Rebuilding replaces the file; nothing else is left beside it.
        try ConfigDisk.build(config, at: path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["config.ext4"])
    }
}
