import SQLite

/// Versioned schema migrations, tracked in `PRAGMA user_version`. Each step runs in one IMMEDIATE
/// transaction, so several processes starting together apply each step exactly once.
enum Migrations {
    static let steps: [String] = [
        // 1: the initial schema.
        """
        CREATE TABLE image_builds(
            digest TEXT PRIMARY KEY,
            repository TEXT NOT NULL,
            source_ref TEXT NOT NULL,
            status TEXT NOT NULL CHECK(status IN ('pending','pulling','converting','ready','failed')),
            error TEXT,
            bytes_done INTEGER NOT NULL DEFAULT 0,
            bytes_total INTEGER NOT NULL DEFAULT 0,
            size_bytes INTEGER,
            disk_path TEXT,
            entrypoint TEXT, cmd TEXT, env TEXT, working_dir TEXT, platform TEXT,
            queue_seq INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX image_builds_queue ON image_builds(status, queue_seq);
        CREATE TABLE images(
            name TEXT PRIMARY KEY,
            digest TEXT NOT NULL REFERENCES image_builds(digest),
            created_at TEXT NOT NULL
        );
        CREATE INDEX images_digest ON images(digest);
        CREATE TABLE instances(
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            image TEXT NOT NULL,
            image_digest TEXT NOT NULL,
            state TEXT NOT NULL,
            state_error TEXT,
            size INTEGER NOT NULL,
            hotplug_size INTEGER NOT NULL,
            overlay_size INTEGER NOT NULL,
            vcpus INTEGER NOT NULL,
            env TEXT NOT NULL DEFAULT '{}',
            network_enabled INTEGER NOT NULL,
            ip TEXT, mac TEXT,
            hypervisor TEXT,
            vmm_pid INTEGER,
            has_snapshot INTEGER NOT NULL DEFAULT 0,
            creating INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            started_at TEXT,
            stopped_at TEXT
        );
        CREATE INDEX instances_name ON instances(name);
        CREATE TABLE volumes(
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            size_gb INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'creating' CHECK(status IN ('creating','ready','deleting')),
            created_at TEXT NOT NULL
        );
        CREATE INDEX volumes_name ON volumes(name);
        CREATE TABLE instance_volumes(
            instance_id TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
            volume_id TEXT NOT NULL REFERENCES volumes(id),
            position INTEGER NOT NULL,
            mount_path TEXT NOT NULL,
            readonly INTEGER NOT NULL,
            overlay INTEGER NOT NULL DEFAULT 0,
            overlay_size INTEGER,
            PRIMARY KEY(instance_id, volume_id)
        );
        CREATE INDEX instance_volumes_volume ON instance_volumes(volume_id);
        CREATE TABLE ingresses(
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            rules TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE ingress_hosts(
            hostname TEXT NOT NULL,
            port INTEGER NOT NULL,
            ingress_id TEXT NOT NULL REFERENCES ingresses(id) ON DELETE CASCADE,
            PRIMARY KEY(hostname, port)
        );
        CREATE TABLE jobs(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            target TEXT NOT NULL,
            payload TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL DEFAULT 'queued' CHECK(state IN ('queued','running','done','failed')),
            answered INTEGER NOT NULL DEFAULT 0,
            error_code TEXT, error_message TEXT, error_status INTEGER,
            waiter TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        );
        CREATE INDEX jobs_state ON jobs(state, id);
        CREATE INDEX jobs_target ON jobs(target, state);
        """,
        // 2: instances created with `skip_guest_agent` boot without the guest agent.
        """
        ALTER TABLE instances ADD COLUMN skip_guest_agent INTEGER NOT NULL DEFAULT 0;
        """,
        // 3: interrupted jobs and builds are retried a bounded number of times, with backoff
        // (`not_before`: Unix milliseconds before which the row may not be claimed).
        """
        ALTER TABLE jobs ADD COLUMN not_before INTEGER;
        ALTER TABLE image_builds ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE image_builds ADD COLUMN not_before INTEGER;
        """,
    ]

    static func apply(_ db: Connection) throws {
        let current = try db.queryOne("PRAGMA user_version")?.values.first
        if case .int(let v) = current, v >= Int64(steps.count) { return }
        for (i, sql) in steps.enumerated() {
            let version = i + 1
            try db.transaction {
                guard case .int(let v)? = try db.queryOne("PRAGMA user_version")?.values.first, v < Int64(version) else { return }
                try db.execute(sql)
                try db.execute("PRAGMA user_version = \(version)")
            }
        }
    }

    /// The schema version this build expects.
    static var latest: Int { steps.count }
}
