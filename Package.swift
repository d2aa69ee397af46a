// swift-tools-version:6.0
import PackageDescription

// One Package.swift, one target per concern. The edge (FastCGI, JSON, SQLite, Store, API,
// FCGIApp) and the provisioner side (HTTPFetch, OCI, Disk, ProvisionerCore, Provisioner)
// meet only through Store, Model and Wakeup. Each C module is imported by one Swift target.
let package = Package(
    name: "hypeman-swift",
    products: [
        .executable(name: "hypeman-fcgi", targets: ["FCGIApp"]),
        .executable(name: "hypeman-provisioner", targets: ["Provisioner"]),
        .executable(name: "hypeman-token", targets: ["HypemanToken"]),
        .executable(name: "hypeman-agent", targets: ["GuestAgent"]),
    ],
    targets: [
        // C libraries from Debian, behind shims for macros and variadic calls.
        .systemLibrary(name: "CFCGI", path: "Sources/CFCGI", pkgConfig: "fcgi", providers: [.apt(["libfcgi-dev"])]),
        .systemLibrary(name: "CJansson", path: "Sources/CJansson", pkgConfig: "jansson", providers: [.apt(["libjansson-dev"])]),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CCrypto", path: "Sources/CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CArchive", path: "Sources/CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),

        // Shared, C-free vocabulary: ids, sizes, names, error catalogue, states.
        .target(name: "Model", exclude: ["README.md"]),
        // Thin wrappers: the only importers of their C module.
        .target(name: "JSON", dependencies: ["CJansson"], exclude: ["README.md"]),
        .target(name: "SQLite", dependencies: ["CSQLite"], exclude: ["README.md"]),
        .target(name: "FastCGI", dependencies: ["CFCGI"], exclude: ["README.md"]),
        .target(name: "Digest", dependencies: ["CCrypto"], exclude: ["README.md"]),
        .target(name: "HTTPFetch", dependencies: ["CCurl", "Digest"], exclude: ["README.md"]),
        // Cross-process wake-ups over Unix datagram sockets (queue <-> waiters).
        .target(name: "Wakeup", exclude: ["README.md"]),
        // The store: schema, migrations, typed queries, the job queue.
        .target(name: "Store", dependencies: ["SQLite", "JSON", "Model"], exclude: ["README.md"]),
        // The HTTP surface: routes, handlers, validation, error mapping.
        .target(name: "API", dependencies: ["FastCGI", "JSON", "Store", "Model", "Wakeup"], exclude: ["README.md"]),
        .executableTarget(name: "FCGIApp", dependencies: ["API"]),

        // Provisioner side.
        .target(name: "OCI", dependencies: ["HTTPFetch", "Digest", "CArchive", "Model", "JSON"], exclude: ["README.md"]),
        .target(name: "Disk", dependencies: ["Model"], exclude: ["README.md"]),
        // Hypervisor-neutral VM protocols and the two drivers.
        .target(name: "VMM", dependencies: ["Model"], exclude: ["README.md"]),
        .target(name: "QEMUDriver", dependencies: ["VMM", "Model"], exclude: ["README.md"]),
        .target(name: "CloudHypervisorDriver", dependencies: ["VMM", "HTTPFetch", "Model"], exclude: ["README.md"]),
        // Host networking: bridge, TAPs, NAT rules, IP/MAC allocation, all inside an optional netns.
        .target(name: "Network", dependencies: ["Model"], exclude: ["README.md"]),
        // Guest boot files: kernel discovery, initramfs (busybox, modules, our init), config disk.
        .target(name: "GuestBoot", dependencies: ["Model", "Digest"], exclude: ["README.md"]),
        .target(name: "ProvisionerCore", dependencies: ["Store", "Model", "JSON", "Wakeup", "OCI", "Disk", "VMM", "QEMUDriver",
                                                        "CloudHypervisorDriver", "GuestBoot", "Network", "AgentProtocol", "ExecGateway"],
                exclude: ["README.md"]),
        .executableTarget(name: "Provisioner", dependencies: ["ProvisionerCore"]),

        // The host <-> guest-agent wire format (frames and typed messages); stdlib only.
        .target(name: "AgentProtocol", exclude: ["README.md"]),
        // The guest agent: exec sessions and volume mounts inside the VM. Linked fully static so
        // it runs whatever libc the image has (it lives in the initramfs, outside the image).
        .executableTarget(name: "GuestAgent", dependencies: ["AgentProtocol"], exclude: ["README.md"],
                          linkerSettings: [.unsafeFlags(["-static-executable"])]),

        // The exec WebSocket gateway: HTTP/1.1 upgrade + RFC 6455 framing on a Unix socket that
        // nginx proxies `GET /instances/{id}/exec` to; sessions run through an `ExecBackend`.
        .target(name: "ExecGateway", dependencies: ["AgentProtocol", "JSON", "Digest", "Model", "Wakeup"], exclude: ["README.md"]),

        // Mints HS256 bearer tokens for a subject and lifetime.
        .executableTarget(name: "HypemanToken", dependencies: ["Digest"]),

        .testTarget(name: "ModelTests", dependencies: ["Model"]),
        .testTarget(name: "JSONTests", dependencies: ["JSON"]),
        .testTarget(name: "StoreTests", dependencies: ["Store", "Model", "JSON"]),
        .testTarget(name: "APITests", dependencies: ["API", "Store", "Model", "JSON"]),
        .testTarget(name: "OCITests", dependencies: ["OCI", "Digest", "Model"]),
        .testTarget(name: "DiskTests", dependencies: ["Disk"]),
        .testTarget(name: "ProvisionerCoreTests", dependencies: ["ProvisionerCore", "Store", "Model", "AgentProtocol",
                                                                "CloudHypervisorDriver", "VMM"]),
        .testTarget(name: "QEMUDriverTests", dependencies: ["QEMUDriver", "VMM"]),
        .testTarget(name: "CloudHypervisorDriverTests", dependencies: ["CloudHypervisorDriver", "VMM"]),
        .testTarget(name: "GuestBootTests", dependencies: ["GuestBoot"]),
        .testTarget(name: "NetworkTests", dependencies: ["Network"]),
        .testTarget(name: "AgentProtocolTests", dependencies: ["AgentProtocol"]),
        .testTarget(name: "GuestAgentTests", dependencies: ["AgentProtocol"]),
        .testTarget(name: "ExecGatewayTests", dependencies: ["ExecGateway", "AgentProtocol"]),
    ]
)
