-- Foundation schema (PostgreSQL). Times are integer milliseconds since the Unix epoch.
-- Keep in step with ../sqlite/0001_foundation.sql; released migrations are never edited.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE projects (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects(id),
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE flavors (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    vcpus      BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    disk_gib   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE images (
    id               TEXT PRIMARY KEY,
    owner_project_id TEXT NOT NULL REFERENCES projects(id),
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    disk_format      TEXT,
    visibility       TEXT NOT NULL,
    state            TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX images_owner ON images(owner_project_id);

CREATE TABLE image_files (
    image_id   TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    PRIMARY KEY (image_id, role)
);

CREATE TABLE key_pairs (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE hosts (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    token_hash        TEXT NOT NULL,
    -- The controller presents this to the agent (console logs); a separate secret
    -- from the host's own token, whose hash alone is stored.
    agent_token       TEXT NOT NULL,
    agent_url         TEXT NOT NULL,
    hypervisor        TEXT NOT NULL,
    availability_zone TEXT NOT NULL,
    enabled           BIGINT NOT NULL,
    status            TEXT NOT NULL,
    vcpus             BIGINT NOT NULL,
    memory_mib        BIGINT NOT NULL,
    disk_gib          BIGINT NOT NULL,
    used_vcpus        BIGINT NOT NULL DEFAULT 0,
    used_memory_mib   BIGINT NOT NULL DEFAULT 0,
    used_disk_gib     BIGINT NOT NULL DEFAULT 0,
    unmanaged_domains TEXT NOT NULL DEFAULT '[]',
    last_heartbeat_at BIGINT,
    registered_at     BIGINT NOT NULL
);

CREATE TABLE instances (
    id                 TEXT PRIMARY KEY,
    project_id         TEXT NOT NULL REFERENCES projects(id),
    name               TEXT NOT NULL,
    flavor_name        TEXT NOT NULL,
    vcpus              BIGINT NOT NULL,
    memory_mib         BIGINT NOT NULL,
    disk_gib           BIGINT NOT NULL,
    image_id           TEXT NOT NULL REFERENCES images(id),
    key_pair_name      TEXT,
    ssh_public_key     TEXT,
    user_data          TEXT,
    host_id            TEXT REFERENCES hosts(id),
    state              TEXT NOT NULL,
    state_reason       TEXT,
    state_deadline_at  BIGINT,
    desired            TEXT NOT NULL,
    generation         BIGINT NOT NULL,
    applied_generation BIGINT NOT NULL DEFAULT 0,
    reboot_generation  BIGINT,
    placement          TEXT,
    created_by         TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    launched_at        BIGINT,
    deleted_at         BIGINT,
    -- Ordering key for pagination: creation time then id.
    seq                TEXT NOT NULL
);
CREATE INDEX instances_project_seq ON instances(project_id, seq);
CREATE INDEX instances_host ON instances(host_id);
CREATE INDEX instances_state ON instances(state);

CREATE TABLE events (
    id            BIGSERIAL PRIMARY KEY,
    project_id    TEXT,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    at            BIGINT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    detail        TEXT NOT NULL
);
CREATE INDEX events_resource ON events(resource_type, resource_id, id);
